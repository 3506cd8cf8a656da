#!/usr/bin/env python3
"""The KServe/Triton system shared-memory extension of a server on this machine (`parva serve`),
driven by NVIDIA's own client and its shared-memory utilities, as Triton's
`simple_http_shm_client.py` example does it.

Usage: tritonclient_shm_check.py HOST:PORT SERVICE [SERVICE ...]

Needs `pip install "tritonclient[http]"`. For every service, through
`tritonclient.http.InferenceServerClient` and `tritonclient.utils.shared_memory`:
- unregister everything, create an input region and an output region
  (`create_shared_memory_region`), write the inputs into the input region back to back (the
  second at an offset), fill the output region with 0xFF, register both, and check
  `get_system_shared_memory_status` lists them with their keys and sizes;
- infer with every input and output in shared memory (`set_shared_memory`, with offsets); each
  output's response entry names its region and size and carries no data, and the bytes read from
  the output region (`get_contents_as_numpy`) equal the outputs of the same request sent as binary
  over HTTP (so the server read the inputs from the region and wrote the outputs into it);
- refusals: registering a name twice, an input larger than its region, a region that does not
  exist, an output region too small for the output; each raises InferenceServerException;
- unregister one region, then all; the status is empty; destroy the regions.
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import numpy as np
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def raises(fn, what, needle):
    try:
        fn()
    except InferenceServerException as e:
        check(needle in str(e), f"{what} raises: {e}")
        return
    check(False, f"{what} raises")


def one_row(t):
    return [1 if d == -1 else int(d) for d in t["shape"]]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, services = sys.argv[1], sys.argv[2:]
    client = httpclient.InferenceServerClient(url=url, connection_timeout=30, network_timeout=30)
    server = client.get_server_metadata()
    check("system_shared_memory" in server["extensions"], f"server lists system_shared_memory: {server['extensions']}")
    for svc in services:
        client.unregister_system_shared_memory()
        meta = client.get_model_metadata(svc)
        arrays = []
        for inp in meta["inputs"]:
            shape = one_row(inp)
            arrays.append((np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(triton_to_np_dtype(inp["datatype"])))
        in_sizes = [a.nbytes for a in arrays]
        out_specs = [(o["name"], one_row(o), triton_to_np_dtype(o["datatype"])) for o in meta["outputs"]]
        out_sizes = [int(np.prod(s)) * np.dtype(dt).itemsize for _, s, dt in out_specs]
        tag = f"parva_shm_check_{svc}"
        ip = shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", sum(in_sizes))
        op = shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", sum(out_sizes))
        try:
            offset = 0
            for a in arrays:
                shm.set_shared_memory_region(ip, [a], offset=offset)
                offset += a.nbytes
            shm.set_shared_memory_region(op, [np.full(sum(out_sizes), 0xFF, dtype=np.uint8)])
            client.register_system_shared_memory(f"{tag}_in", f"/{tag}_in", sum(in_sizes))
            client.register_system_shared_memory(f"{tag}_out", f"/{tag}_out", sum(out_sizes))
            status = {r["name"]: r for r in client.get_system_shared_memory_status()}
            check(status.get(f"{tag}_in", {}).get("key") == f"/{tag}_in"
                  and int(status[f"{tag}_in"]["byte_size"]) == sum(in_sizes)
                  and int(status.get(f"{tag}_out", {}).get("byte_size", -1)) == sum(out_sizes),
                  f"{svc}: status lists both regions {sorted(status)}")
            one = client.get_system_shared_memory_status(region_name=f"{tag}_in")
            check(len(one) == 1 and one[0]["name"] == f"{tag}_in", f"{svc}: status of one region")

            def shm_inputs(sizes=in_sizes, region=f"{tag}_in"):
                out, offset = [], 0
                for inp, a, size in zip(meta["inputs"], arrays, sizes):
                    t = httpclient.InferInput(inp["name"], list(a.shape), inp["datatype"])
                    t.set_shared_memory(region, size, offset=offset)
                    out.append(t)
                    offset += a.nbytes
                return out

            def shm_outputs(sizes=out_sizes):
                out, offset = [], 0
                for (name, _, _), size in zip(out_specs, sizes):
                    o = httpclient.InferRequestedOutput(name, binary_data=True)
                    o.set_shared_memory(f"{tag}_out", size, offset=offset)
                    out.append(o)
                    offset += size
                return out

            result = client.infer(svc, shm_inputs(), outputs=shm_outputs())
            # The same request with its tensors over HTTP, for the expected outputs.
            plain = []
            for inp, a in zip(meta["inputs"], arrays):
                t = httpclient.InferInput(inp["name"], list(a.shape), inp["datatype"])
                t.set_data_from_numpy(a, binary_data=True)
                plain.append(t)
            expected = client.infer(svc, plain)
            offset = 0
            for (name, shape, dt), size in zip(out_specs, out_sizes):
                entry = result.get_output(name)
                params = entry.get("parameters", {})
                check(params.get("shared_memory_region") == f"{tag}_out" and int(params.get("shared_memory_byte_size", -1)) == size
                      and "data" not in entry, f"{svc}: output {name} names its region ({params})")
                got = shm.get_contents_as_numpy(op, dt, entry["shape"], offset=offset)
                want = expected.as_numpy(name)
                check(got.shape == want.shape and np.array_equal(got, want),
                      f"{svc}: output {name} read from shared memory equals the HTTP answer ({list(got.shape)}, {got.dtype})")
                offset += size

            raises(lambda: client.register_system_shared_memory(f"{tag}_in", f"/{tag}_in", sum(in_sizes)),
                   f"{svc}: registering a name twice", "already registered")
            raises(lambda: client.infer(svc, shm_inputs(sizes=in_sizes[:-1] + [in_sizes[-1] + 1])),
                   f"{svc}: an input larger than its region", "do not fit")
            raises(lambda: client.infer(svc, shm_inputs(region="no_such_region")),
                   f"{svc}: an unregistered region", "no_such_region")
            raises(lambda: client.infer(svc, shm_inputs(), outputs=shm_outputs(sizes=[max(s - 1, 1) for s in out_sizes])),
                   f"{svc}: an output region too small", "too small")
            raises(lambda: client.register_system_shared_memory(f"{tag}_big", f"/{tag}_in", sum(in_sizes) + 1),
                   f"{svc}: a region larger than its object", "are needed")

            client.unregister_system_shared_memory(f"{tag}_in")
            left = [r["name"] for r in client.get_system_shared_memory_status()]
            check(left == [f"{tag}_out"], f"{svc}: unregistering one region leaves the other ({left})")
            client.unregister_system_shared_memory()
            check(client.get_system_shared_memory_status() == [], f"{svc}: unregistering all leaves none")
        finally:
            shm.destroy_shared_memory_region(ip)
            shm.destroy_shared_memory_region(op)
    print("tritonclient shared-memory check passed", flush=True)


if __name__ == "__main__":
    main()
