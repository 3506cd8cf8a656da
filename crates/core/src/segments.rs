//! Segments by name, for serving a map split into a router tier and segment processes
//! (`parva segment`, `parva route`, the Kubernetes objects of `parva export k8s`).
//!
//! - [`SegmentId`]: a segment's name, `n<node>-g<gpu>-p<placement>` (e.g. `n0-g1-p4`): unique in a
//!   map (two segments never share a GPU's placement start), stable across replans that keep the
//!   segment, and valid inside a DNS label, so it names Kubernetes objects too.
//! - [`DeploymentMap::segment`] finds one; [`DeploymentMap::only_segment`] is the map that one
//!   segment process serves (its service's rate scaled to the segment's share).
//! - [`read_segment_urls`] reads where each segment listens, `segment,url`; [`SegmentUrls`] is
//!   that list or a URL template such as `http://parva-{segment}.parva.svc:8000` (DNS).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::deploy::{DeploymentMap, Segment};
use crate::error::{CsvInput, FormatError, Location};

/// A segment's name in a map: node, GPU (index on the node) and MIG placement start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    pub node: u32,
    pub gpu: u32,
    pub placement: u8,
}

impl SegmentId {
    /// The id of `seg`.
    pub fn of(seg: &Segment) -> SegmentId {
        SegmentId { node: seg.node, gpu: seg.gpu, placement: seg.placement }
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}-g{}-p{}", self.node, self.gpu, self.placement)
    }
}

/// Written as its text (`n0-g1-p4`) in JSON reports.
impl serde::Serialize for SegmentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a text is not a segment id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{text:?} is not a segment id: want n<node>-g<gpu>-p<placement>, e.g. n0-g1-p4 ({why})")]
pub struct BadSegmentId {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for SegmentId {
    type Err = BadSegmentId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| BadSegmentId { text: text.chars().take(64).collect(), why };
        let mut parts = text.split('-');
        let mut field = |prefix: char| -> Result<u64, BadSegmentId> {
            let p = parts.next().ok_or(bad("too few parts"))?;
            let digits = p.strip_prefix(prefix).ok_or(bad("parts must start n, g and p"))?;
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each part is a letter and a number"));
            }
            digits.parse::<u64>().map_err(|_| bad("number out of range"))
        };
        let node = field('n')?;
        let gpu = field('g')?;
        let placement = field('p')?;
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        Ok(SegmentId {
            node: u32::try_from(node).map_err(|_| bad("node out of range"))?,
            gpu: u32::try_from(gpu).map_err(|_| bad("gpu out of range"))?,
            placement: u8::try_from(placement).ok().filter(|p| *p < 8).ok_or(bad("placement is 0..=7"))?,
        })
    }
}

/// Why a map has no such segment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the map has no segment {id} (it has {have})")]
pub struct NoSuchSegment {
    pub id: SegmentId,
    /// The map's segment ids, the first few.
    pub have: String,
}

impl DeploymentMap {
    /// The map's segment ids, in map order.
    pub fn segment_ids(&self) -> Vec<SegmentId> {
        self.segments.iter().map(SegmentId::of).collect()
    }

    /// The segment named `id`.
    pub fn segment(&self, id: SegmentId) -> Result<&Segment, NoSuchSegment> {
        self.segments.iter().find(|s| SegmentId::of(s) == id).ok_or_else(|| {
            let ids = self.segment_ids();
            let mut have: Vec<String> = ids.iter().take(8).map(ToString::to_string).collect();
            if ids.len() > 8 {
                have.push(format!("... {} in all", ids.len()));
            }
            NoSuchSegment { id, have: if have.is_empty() { "none".into() } else { have.join(", ") } }
        })
    }

    /// Each segment's share of its service's planned capacity (profiled throughput, or GPCs x
    /// processes when some segment of the map lacks one): how a router spreads the service.
    pub fn segment_shares(&self) -> BTreeMap<SegmentId, f64> {
        let all_have = self.segments.iter().all(|s| s.throughput.is_some_and(|t| t > 0.0));
        let w = |s: &Segment| if all_have { s.throughput.unwrap_or(0.0) } else { s.instance_size as f64 * s.num_proc as f64 };
        let mut total: BTreeMap<&str, f64> = BTreeMap::new();
        for s in &self.segments {
            *total.entry(&s.service).or_default() += w(s);
        }
        self.segments
            .iter()
            .map(|s| {
                let t = total[s.service.as_str()];
                (SegmentId::of(s), if t > 0.0 { w(s) / t } else { 0.0 })
            })
            .collect()
    }

    /// The map one segment process serves: that segment alone, its service's rate scaled to the
    /// segment's share (so admission, reports and `verify` see the segment's load, not the
    /// service's), no best-effort rows.
    pub fn only_segment(&self, id: SegmentId) -> Result<DeploymentMap, NoSuchSegment> {
        let seg = self.segment(id)?;
        let share = self.segment_shares().get(&id).copied().unwrap_or(1.0);
        Ok(DeploymentMap { segments: vec![Segment { rate: seg.rate.map(|r| r * share), ..seg.clone() }], jobs: Vec::new() })
    }
}

/// Longest segment URL read from a list, bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Where segments listen.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentUrls {
    /// A list read by [`read_segment_urls`].
    List(BTreeMap<SegmentId, String>),
    /// A template with `{segment}` (e.g. the DNS names of per-segment Kubernetes Services).
    Template(String),
}

impl SegmentUrls {
    /// `FILE` (a `segment,url` list) or a template `http://...{segment}...`.
    pub fn parse(arg: &str) -> Result<SegmentUrls, FormatError> {
        if arg.contains("{segment}") {
            check_url(arg, Location::file("--segments"))?;
            return Ok(SegmentUrls::Template(arg.to_string()));
        }
        Ok(SegmentUrls::List(read_segment_urls(Path::new(arg))?))
    }

    /// The URL of segment `id`, if known.
    pub fn url(&self, id: SegmentId) -> Option<String> {
        match self {
            SegmentUrls::List(m) => m.get(&id).cloned(),
            SegmentUrls::Template(t) => Some(t.replace("{segment}", &id.to_string())),
        }
    }
}

/// Whether `authority` is `host`, `host:port`, `[v6]` or `[v6]:port` (port 1 to 65535).
fn authority_ok(authority: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
    let host_ok = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else { return false };
        let addr_ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        return addr_ok && (rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok));
    }
    match authority.split_once(':') {
        Some((host, port)) => host_ok(host) && port_ok(port),
        None => host_ok(authority),
    }
}

fn check_url(url: &str, at: Location) -> Result<(), FormatError> {
    // A template's `{segment}` stands for a segment id (letters, digits and '-').
    let concrete = url.replace("{segment}", "n0-g0-p0");
    let rest = concrete.strip_prefix("http://");
    let authority = rest.map(|r| r.split('/').next().unwrap_or(""));
    let ok = url.len() <= MAX_URL_LEN && authority.is_some_and(authority_ok) && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(FormatError::invalid(
            at,
            format!("{url:?} is not an http://host:port URL (a host name, IPv4 address or [IPv6] address, a port 1-65535; at most {MAX_URL_LEN} bytes, no spaces)"),
        ))
    }
}

/// Read a segment URL list, `segment,url` (`n0-g1-p4,http://10.0.0.7:8001`): header checked,
/// input bounded as every CSV parva reads, each bad row named by line and field.
pub fn read_segment_urls(path: &Path) -> Result<BTreeMap<SegmentId, String>, FormatError> {
    let mut out = BTreeMap::new();
    CsvInput::for_each_pair(path, "open segment list", ["segment", "url"], |line, id, url| {
        let id: SegmentId = id.parse().map_err(|e: BadSegmentId| FormatError::invalid(Location::field(path, line, "segment"), e.to_string()))?;
        let url = url.trim_end_matches('/');
        check_url(url, Location::field(path, line, "url"))?;
        if out.insert(id, url.to_string()).is_some() {
            return Err(FormatError::invalid(Location::field(path, line, "segment"), format!("segment {id} is listed twice")));
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(node: u32, gpu: u32, placement: u8, service: &str, size: u8, tput: Option<f64>) -> Segment {
        Segment { batch_size: 4, throughput: tput, rate: Some(300.0), slo_ms: Some(100.0), ..Segment::at(node, gpu, placement, size, service, "m") }
    }

    #[test]
    fn segment_ids_print_and_parse_back_and_bad_ones_say_why() {
        let id = SegmentId { node: 12, gpu: 3, placement: 4 };
        assert_eq!(id.to_string(), "n12-g3-p4");
        assert_eq!("n12-g3-p4".parse::<SegmentId>().unwrap(), id);
        for (text, why) in [
            ("", "parts must start"),
            ("n0-g1", "too few parts"),
            ("n0-g1-p4-x", "too many parts"),
            ("n0-g1-p8", "placement is 0..=7"),
            ("n0-g-p1", "each part is a letter"),
            ("n+1-g0-p0", "each part is a letter"),
            ("n99999999999999999999-g0-p0", "number out of range"),
            ("n9999999999-g0-p0", "node out of range"),
            ("g0-n0-p0", "parts must start"),
        ] {
            let e = text.parse::<SegmentId>().unwrap_err();
            assert!(e.why.starts_with(why), "{text:?}: {}", e.why);
            assert!(e.to_string().contains("e.g. n0-g1-p4"), "{e}");
        }
    }

    #[test]
    fn one_segment_map_carries_its_share_of_the_service_rate() {
        let map = DeploymentMap {
            segments: vec![seg(0, 0, 0, "a", 4, Some(300.0)), seg(1, 0, 4, "a", 3, Some(100.0)), seg(1, 0, 0, "b", 4, Some(50.0))],
            jobs: vec![],
        };
        let id: SegmentId = "n1-g0-p4".parse().unwrap();
        let one = map.only_segment(id).unwrap();
        assert_eq!(one.segments.len(), 1);
        assert_eq!(one.segments[0].service, "a");
        assert!((one.segments[0].rate.unwrap() - 75.0).abs() < 1e-9, "a quarter of a's capacity: {:?}", one.segments[0].rate);
        let shares = map.segment_shares();
        assert!((shares[&"n0-g0-p0".parse().unwrap()] - 0.75).abs() < 1e-9);
        assert_eq!(shares[&"n1-g0-p0".parse().unwrap()], 1.0);
        let e = map.only_segment("n2-g0-p0".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(e, "the map has no segment n2-g0-p0 (it has n0-g0-p0, n1-g0-p4, n1-g0-p0)");
        // Without throughputs everywhere, GPCs x processes weigh.
        let mut no_tput = map.clone();
        no_tput.segments[0].throughput = None;
        assert!((no_tput.segment_shares()[&id] - 3.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn segment_url_lists_and_templates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("segments.csv");
        std::fs::write(&p, "segment,url\nn0-g0-p0,http://127.0.0.1:9001/\nn1-g0-p4, http://h:2 \n").unwrap();
        let urls = SegmentUrls::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(urls.url("n0-g0-p0".parse().unwrap()).as_deref(), Some("http://127.0.0.1:9001"));
        assert_eq!(urls.url("n1-g0-p4".parse().unwrap()).as_deref(), Some("http://h:2"));
        assert_eq!(urls.url("n1-g0-p0".parse().unwrap()), None);
        let t = SegmentUrls::parse("http://parva-{segment}.ns.svc:8000").unwrap();
        assert_eq!(t.url("n1-g0-p4".parse().unwrap()).as_deref(), Some("http://parva-n1-g0-p4.ns.svc:8000"));
        assert!(SegmentUrls::parse("ftp://{segment}").unwrap_err().to_string().contains("not an http://host:port URL"));
        for good in ["http://[::1]:18577", "http://[fe80::1]", "http://10.0.0.7:8001", "http://h"] {
            std::fs::write(&p, format!("segment,url\nn0-g0-p0,{good}\n")).unwrap();
            assert!(read_segment_urls(&p).is_ok(), "{good}");
        }
        for (text, want) in [
            ("seg,url\n", "segments.csv:1: header must be `segment,url`"),
            ("segment,url\nx,http://a:1\n", "segments.csv:2: field `segment`: \"x\" is not a segment id"),
            ("segment,url\nn0-g0-p0,https://a\n", "segments.csv:2: field `url`"),
            ("segment,url\nn0-g0-p0,http://\n", "segments.csv:2: field `url`"),
            // Regression (issue 34): an unclosed IPv6 bracket was taken.
            ("segment,url\nn0-g0-p0,http://[::1:18577\n", "segments.csv:2: field `url`: \"http://[::1:18577\" is not an http://host:port URL"),
            ("segment,url\nn0-g0-p0,http://a:99999\n", "segments.csv:2: field `url`"),
            ("segment,url\nn0-g0-p0,http://a:1:2\n", "segments.csv:2: field `url`"),
            ("segment,url\nn0-g0-p0,http://a:1\nn0-g0-p0,http://b:1\n", "segments.csv:3: field `segment`: segment n0-g0-p0 is listed twice"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_segment_urls(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes, with or without the header: an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(a in proptest::collection::vec(any::<u8>(), 0..400)) {
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("s.csv");
                std::fs::write(&p, &a).unwrap();
                let _ = read_segment_urls(&p);
                let mut with_header = b"segment,url\n".to_vec();
                with_header.extend(&a);
                std::fs::write(&p, &with_header).unwrap();
                let _ = read_segment_urls(&p);
            }

            /// Every id prints to a text that parses back to it; any text parses or says why.
            #[test]
            fn ids_round_trip(node in any::<u32>(), gpu in any::<u32>(), placement in 0u8..8, text in ".{0,40}") {
                let id = SegmentId { node, gpu, placement };
                prop_assert_eq!(id.to_string().parse::<SegmentId>().unwrap(), id);
                let _ = text.parse::<SegmentId>();
            }
        }
    }
}
