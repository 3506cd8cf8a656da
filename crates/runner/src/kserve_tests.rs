use super::*;

#[test]
fn shared_memory_inputs_are_read_in_place_and_must_fit_their_region() {
    let dir = tempfile::tempdir().unwrap();
    let floats: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("in0"), &floats).unwrap();
    std::fs::write(dir.path().join("out0"), [0u8; 8]).unwrap();
    let regions = Regions::in_dir(dir.path().to_path_buf());
    regions.register("in", "/in0", 0, 16).unwrap();
    regions.register("out", "/out0", 0, 8).unwrap();
    assert!(regions.register("in", "/in0", 0, 16).unwrap_err().to_string().contains("already registered"));
    let req = |shape: &str, size: u64, offset: u64| {
        let body = format!(r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","parameters":{{"shared_memory_region":"in","shared_memory_byte_size":{size},"shared_memory_offset":{offset}}}}}],
                "outputs":[{{"name":"y","parameters":{{"shared_memory_region":"out","shared_memory_byte_size":8}}}}]}}"#);
        super::decode_request(&Bytes::from(body), None, None, Some(ShmAccess { regions: &regions, reserve: &mut |_| Ok(()) }))
    };
    let r = req("[1,2]", 8, 8).unwrap();
    assert_eq!(&r.inputs[0].data[..], &floats[8..16]);
    // The output goes into its region, and the response names it instead of carrying data.
    let y = Tensor { name: "y".into(), datatype: DataType::Fp32, shape: vec![1, 2], data: floats[..8].to_vec().into() };
    let (body, json_len) = encode_response("m", &r, vec![y.clone()]).unwrap();
    assert_eq!(json_len, None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["outputs"][0]["parameters"], json!({"shared_memory_region": "out", "shared_memory_byte_size": 8}));
    assert!(v["outputs"][0].get("data").is_none());
    assert_eq!(std::fs::read(dir.path().join("out0")).unwrap(), floats[..8]);
    // An output bigger than its region is a 400 and nothing is written.
    let big = Tensor { shape: vec![1, 4], data: floats.clone().into(), ..y };
    let e = encode_response("m", &r, vec![big]).unwrap_err();
    assert!(matches!(&e, InferError::BadRequest(m) if m.contains("too small")), "{e}");
    // A region smaller than the declared tensor, a size that is not the tensor's, an unknown
    // region: each a 400 naming the problem, never a read past the region.
    for (shape, size, offset, why) in [
        ("[1,4]", 16, 8, "do not fit shared memory region \"in\" of 16 bytes"),
        ("[1,2]", 8, u64::MAX, "do not fit"),
        ("[1,2]", 12, 0, "shared_memory_byte_size 12 where shape [1, 2] of FP32 needs 8"),
    ] {
        let e = req(shape, size, offset).unwrap_err();
        assert!(matches!(&e, InferError::BadRequest(m) if m.contains(why)), "{e} lacks {why:?}");
    }
    regions.unregister(Some("in"));
    assert!(req("[1,2]", 8, 0).unwrap_err().to_string().contains("Unable to find system shared memory region: \"in\""));
    assert_eq!(regions.status(None).unwrap(), json!([{"name": "out", "key": "/out0", "offset": 0, "byte_size": 8}]));
    regions.unregister(None);
    assert_eq!(regions.status(None).unwrap(), json!([]));
    // With the model's metadata, an output region too small for the answer is refused before
    // the request runs: y is 3 FP32 per row, 24 bytes for 2 rows.
    regions.register("in", "/in0", 0, 16).unwrap();
    regions.register("out", "/out0", 0, 8).unwrap();
    let meta = tiny_meta();
    let limits = RequestLimits { meta: &meta, max_rows: 8 };
    let body = Bytes::from(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"shared_memory_region":"in","shared_memory_byte_size":16}}],
            "outputs":[{"name":"y","parameters":{"shared_memory_region":"out","shared_memory_byte_size":8}}]}"#);
    let e = super::decode_request(&body, None, Some(&limits), Some(ShmAccess { regions: &regions, reserve: &mut |_| Ok(()) })).unwrap_err().to_string();
    assert!(e.contains("output \"y\": shared_memory_byte_size 8 is too small for its 24 bytes (2 rows of 12)"), "{e}");
    // Without a registry (an endpoint that serves no shared memory): a 400.
    let body = Bytes::from(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"shared_memory_region":"in","shared_memory_byte_size":4}}]}"#);
    assert!(super::decode_request(&body, None, None, None).unwrap_err().to_string().contains("does not serve shared memory"));
}

/// The decoder on a plain byte slice, without shared memory.
fn decode_request(body: &[u8], header_len: Option<usize>, limits: Option<&RequestLimits>) -> Result<Request, InferError> {
    super::decode_request(&Bytes::copy_from_slice(body), header_len, limits, None)
}

#[test]
fn json_and_binary_inputs_decode_to_the_same_tensor() {
    let j = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
    let r = decode_request(j, None, None).unwrap();
    let want: Vec<u8> = [1f32, 2., 3., 4.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(r.inputs[0].data, want);
    let head = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"x","parameters":{"binary_data":true}}]}"#;
    let mut body = head.to_vec();
    body.extend_from_slice(&want);
    let r2 = decode_request(&body, Some(head.len()), None).unwrap();
    assert_eq!(r2.inputs, r.inputs);
    let (out, json_len) = encode_response("m", &r2, r2.inputs.clone()).unwrap();
    let json_len = json_len.unwrap();
    assert_eq!(&out[json_len..], want.as_slice());
    let v: Value = serde_json::from_slice(&out[..json_len]).unwrap();
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
}

#[test]
fn bad_inputs_are_named_in_the_message() {
    let e = decode_request(br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2]}]}"#, None, None).unwrap_err();
    assert!(e.to_string().contains("\"x\"") && e.to_string().contains("holds 3"), "{e}");
    let e = decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#, None, None).unwrap_err();
    assert!(e.to_string().contains("INT8"), "{e}");
    let e = decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#, None, None).unwrap_err();
    assert!(e.to_string().contains("BYTES"), "{e}");
    assert_eq!(e.status(), 400);
    let r = decode_request(br#"{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[true,0]}]}"#, None, None).unwrap();
    assert_eq!(tensor_to_json(&r.inputs[0]), vec![json!(true), json!(false)]);
}

fn tiny_meta() -> ModelMeta {
    serde_json::from_str(
        r#"{"name":"tiny","inputs":[{"name":"x","datatype":"FP32","shape":[-1,2]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,3]}]}"#,
    )
    .unwrap()
}

fn message(r: Result<Request, InferError>) -> String {
    let e = r.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    assert!(matches!(e, InferError::BadRequest(_)), "{e:?}");
    e.to_string()
}

// Issue 11: this body made the decoder reserve 512 TB for the declared shape and abort the
// whole server. It must be a 400 that names the shape and the data actually sent.
#[test]
fn json_shape_larger_than_its_data_is_refused_before_allocation() {
    let body = br#"{"inputs":[{"name":"x","shape":[1000000000000,128],"datatype":"FP32","data":[1]}]}"#;
    let e = message(decode_request(body, None, None));
    assert!(e.contains("\"x\": 1 elements of data where its shape [1000000000000, 128] holds 128000000000000"), "{e}");
    // Against the model, the rows are refused before the data is even looked at.
    let meta = tiny_meta();
    let limits = RequestLimits { meta: &meta, max_rows: 64 };
    let body = br#"{"inputs":[{"name":"x","shape":[1000000000000,2],"datatype":"FP32","data":[1]}]}"#;
    let e = message(decode_request(body, None, Some(&limits)));
    assert!(e.contains("1000000000000 rows") && e.contains("at most 64 rows per request (--max-request-rows)"), "{e}");
}

#[test]
fn binary_shape_larger_than_its_data_is_refused_before_copying() {
    let head = br#"{"inputs":[{"name":"x","shape":[1000000000000,128],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
    let mut body = head.to_vec();
    body.extend_from_slice(&1f32.to_le_bytes());
    let e = message(decode_request(&body, Some(head.len()), None));
    assert!(e.contains("4 bytes of data where shape [1000000000000, 128] of FP32 needs 512000000000000"), "{e}");
    // A binary_data_size past the body.
    let head = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":18446744073709551615}}]}"#;
    let e = message(decode_request(head, Some(head.len()), None));
    assert!(e.contains("binary_data_size") && e.contains("only 0 binary bytes remain"), "{e}");
}

#[test]
fn shapes_whose_element_or_byte_count_overflows_are_refused() {
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[9223372036854775807,9223372036854775807],"datatype":"FP32","data":[]}]}"#, None, None));
    assert!(e.contains("invalid shape [9223372036854775807, 9223372036854775807]"), "{e}");
    // 2^62 elements fit a usize; their 2^64 bytes do not.
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[4611686018427387904],"datatype":"FP32","data":[1]}]}"#, None, None));
    assert!(e.contains("needs more bytes than memory can address"), "{e}");
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[-1,2],"datatype":"FP32","data":[1,2]}]}"#, None, None));
    assert!(e.contains("invalid shape [-1, 2]"), "{e}");
}

#[test]
fn json_nesting_deeper_than_the_recursion_limit_is_refused_not_overflowing_the_stack() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // In the data: serde_json's recursion limit (128) stops it.
    let body = format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}}}]}}"#, deep(100_000));
    let e = message(decode_request(body.as_bytes(), None, None));
    assert!(e.contains("recursion limit exceeded"), "{e}");
    // In an ignored parameter or an unknown field, serde_json skips it without recursing
    // (and without storing it): no stack, no memory, no error.
    for body in [format!(r#"{{"parameters":{{"p":{}}},"inputs":[]}}"#, deep(100_000)), format!(r#"{{"other":{},"inputs":[]}}"#, deep(100_000))] {
        assert!(decode_request(body.as_bytes(), None, None).unwrap().inputs.is_empty());
    }
    // Nesting within the limit is fine (data of shape [1] nested 100 deep).
    let body = format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#, "[".repeat(100), "]".repeat(100));
    assert_eq!(decode_request(body.as_bytes(), None, None).unwrap().inputs[0].data[..], 1f32.to_le_bytes());
}

#[test]
fn json_data_beyond_what_the_model_takes_is_cut_off_while_it_is_parsed() {
    let meta = tiny_meta();
    let limits = RequestLimits { meta: &meta, max_rows: 2 };
    // 4 elements at most (2 rows x 2); the fifth stops the parser.
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, None, Some(&limits)));
    assert!(e.contains("more than 4 elements"), "{e}");
    let ok = decode_request(br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#, None, Some(&limits)).unwrap();
    assert_eq!(ok.inputs[0].data.len(), 16);
    // Without limits, at most one element per body byte is ever held.
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1,2]}]}"#, None, None));
    assert!(e.contains("2 elements of data where its shape [1] holds 1"), "{e}");
}

#[test]
fn inputs_are_checked_against_the_model_before_their_data() {
    let meta = tiny_meta();
    let limits = RequestLimits { meta: &meta, max_rows: 8 };
    let e = message(decode_request(br#"{"inputs":[{"name":"z","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#, None, Some(&limits)));
    assert!(e.contains("model \"tiny\" has no input \"z\" (inputs: x)"), "{e}");
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT32","data":[1,2]}]}"#, None, Some(&limits)));
    assert!(e.contains("datatype INT32 where the model takes FP32"), "{e}");
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#, None, Some(&limits)));
    assert!(e.contains("shape [1, 3] does not match the model's [-1, 2]"), "{e}");
    let e = message(decode_request(br#"{"inputs":[{"name":"x","shape":[0,2],"datatype":"FP32","data":[]}]}"#, None, Some(&limits)));
    assert!(e.contains("batch >= 1"), "{e}");
    let two = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#;
    assert!(message(decode_request(two, None, Some(&limits))).contains("2 inputs where model \"tiny\" takes 1"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    // Runs in the suite with proptest's case count (64 here); longer:
    // PROPTEST_CASES=100000 cargo test --locked -p parva-runner kserve::tests::props
    fn config() -> ProptestConfig {
        ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64), ..ProptestConfig::default() }
    }

    /// Decoding never panics; a success holds tensors whose bytes match their shapes.
    fn check(body: &[u8], header_len: Option<usize>, limits: Option<&RequestLimits>) -> Result<Request, InferError> {
        let r = decode_request(body, header_len, limits);
        match &r {
            Ok(req) => {
                for t in &req.inputs {
                    assert!(t.is_consistent(), "{t:?}");
                }
            }
            Err(e) => assert_eq!(e.status(), 400, "{e}"),
        }
        r
    }

    fn dims() -> impl Strategy<Value = Vec<i64>> {
        prop::collection::vec(prop_oneof![4 => 0i64..4, 1 => Just(-1i64), 1 => Just(1_000_000_000_000i64), 1 => Just(i64::MAX)], 0..4)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), split in prop::option::of(0usize..600)) {
            let meta = tiny_meta();
            let limits = RequestLimits { meta: &meta, max_rows: 4 };
            let _ = check(&body, split, None);
            let _ = check(&body, split, Some(&limits));
        }

        #[test]
        fn near_valid_json_requests_decode_exactly_or_give_400(
            shape in dims(),
            dt in prop::sample::select(DataType::ALL.to_vec()),
            data in prop::collection::vec(prop_oneof![Just(json!(0)), Just(json!(1.5)), Just(json!(-3)), Just(json!(true)), Just(json!(300)), Just(json!([1, 2])), Just(json!("s"))], 0..9),
            with_limits in any::<bool>(),
        ) {
            let body = json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt.name(), "data": data}]}).to_string();
            let meta = tiny_meta();
            let limits = RequestLimits { meta: &meta, max_rows: 3 };
            if let Ok(r) = check(body.as_bytes(), None, with_limits.then_some(&limits)) {
                let t = &r.inputs[0];
                prop_assert_eq!(&t.shape, &shape);
                prop_assert_eq!(t.data.len(), element_count(&shape).unwrap() * dt.size());
                // Round trip: the JSON of the tensor decodes to the same bytes.
                let again = json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt.name(), "data": tensor_to_json(t)}]}).to_string();
                prop_assert_eq!(&check(again.as_bytes(), None, None).unwrap().inputs[0].data, &t.data);
            }
        }

        #[test]
        fn near_valid_binary_requests_decode_exactly_or_give_400(
            shape in dims(),
            dt in prop::sample::select(DataType::ALL.to_vec()),
            declared in prop_oneof![0u64..40, Just(u64::MAX)],
            sent in prop::collection::vec(any::<u8>(), 0..40),
            with_limits in any::<bool>(),
        ) {
            let head = json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt.name(), "parameters": {"binary_data_size": declared}}]}).to_string();
            let mut body = head.clone().into_bytes();
            body.extend_from_slice(&sent);
            let meta = tiny_meta();
            let limits = RequestLimits { meta: &meta, max_rows: 3 };
            if let Ok(r) = check(&body, Some(head.len()), with_limits.then_some(&limits)) {
                prop_assert_eq!(&r.inputs[0].data, &sent);
                prop_assert_eq!(declared as usize, sent.len());
            }
        }
    }
}
