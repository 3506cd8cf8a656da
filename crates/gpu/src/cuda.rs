//! What CUDA itself says about the devices this process can see, through the CUDA driver API
//! (`cudarc`, loading `libcuda.so` at run time: nothing CUDA is needed to build or test parva).
//!
//! CUDA fixes the set of visible devices at `cuInit`, from `CUDA_VISIBLE_DEVICES`, so one process
//! cannot probe every GPU and MIG device of a node in turn. [`CudaProbe`] therefore probes one
//! *target* (a `GPU-...` or `MIG-...` UUID) per call; [`ChildCudaProbe`] runs `parva doctor
//! --cuda-probe` as a child process per target with `CUDA_VISIBLE_DEVICES` set, which also keeps
//! a driver crash or hang out of the doctor itself. [`probe_visible`] is what that child runs.
//! [`FakeCuda`] answers from a table for tests.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes copied device-to-device by the copy timing: 256 MiB, or a quarter of free memory
/// when that is less (a 1g MIG slice has 10-24 GiB; the probe must never crowd a tenant).
pub const COPY_BYTES: usize = 256 << 20;
/// Timed copies after one untimed warm-up copy.
pub const COPY_REPEATS: u32 = 5;

/// One CUDA device as the driver API reports it from inside a context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CudaDevice {
    /// Ordinal among the devices this process sees.
    pub ordinal: usize,
    /// `cuDeviceGetName`, e.g. `NVIDIA H100 80GB HBM3 MIG 3g.40gb`.
    pub name: String,
    /// `cuDeviceGetUuid` as hex groups, without the `GPU-`/`MIG-` prefix nvidia-smi adds (CUDA's
    /// bytes do not say which; for a MIG device they are the MIG device's own UUID).
    pub uuid: String,
    /// Compute capability (`9.0`).
    pub compute_capability: String,
    /// Streaming multiprocessors CUDA gives a context on this device.
    pub sms: i32,
    pub total_mib: f64,
    pub free_mib: f64,
    /// Device-to-device copy bandwidth (read + write), GB/s; `None` when too little memory was free.
    pub copy_gbps: Option<f64>,
    /// Milliseconds from `cuInit` to a usable context on this device (context creation cost).
    pub context_ms: f64,
}

/// The driver and the devices one probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CudaProbeResult {
    /// `cuDriverGetVersion` as `12.8`.
    pub driver_api: String,
    pub devices: Vec<CudaDevice>,
}

/// Why CUDA could not be probed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaError {
    #[error("the CUDA driver library (libcuda.so.1) cannot be loaded: no NVIDIA driver on this machine, or not on the loader path")]
    NoDriver,
    #[error("CUDA {call} failed: {message}")]
    Driver { call: &'static str, message: String },
    #[error("CUDA probe of {target}: {message}")]
    Probe { target: String, message: String },
}

fn driver_err(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver { call, message: format!("{e:?}") }
}

/// Probes every device visible to this process (after `CUDA_VISIBLE_DEVICES`): opens a context
/// on each, reads its SMs and memory and times a device copy. Checks that the driver library
/// loads before touching it, so a machine without a driver gets [`CudaError::NoDriver`], not a
/// panic.
pub fn probe_visible() -> Result<CudaProbeResult, CudaError> {
    use cudarc::driver::{CudaContext, result, sys};
    // SAFETY: only tries to dlopen the library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    let begin = Instant::now();
    result::init().map_err(driver_err("cuInit"))?;
    let mut version = 0i32;
    // SAFETY: one out-parameter, written by the driver.
    let rc = unsafe { sys::cuDriverGetVersion(&mut version) };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return Err(CudaError::Driver { call: "cuDriverGetVersion", message: format!("{rc:?}") });
    }
    let count = result::device::get_count().map_err(driver_err("cuDeviceGetCount"))?;
    let mut devices = Vec::new();
    for ordinal in 0..usize::try_from(count).unwrap_or(0) {
        let t0 = if ordinal == 0 { begin } else { Instant::now() };
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuDevicePrimaryCtxRetain"))?;
        let context_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (major, minor) = ctx.compute_capability().map_err(driver_err("cuDeviceGetAttribute"))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("cuDeviceGetAttribute"))?;
        let (free, total) = ctx.mem_get_info().map_err(driver_err("cuMemGetInfo"))?;
        let uuid = ctx.uuid().map_err(driver_err("cuDeviceGetUuid"))?;
        let copy_gbps = time_copy(&ctx, free)?;
        devices.push(CudaDevice {
            ordinal,
            name: ctx.name().map_err(driver_err("cuDeviceGetName"))?,
            uuid: uuid_text(&uuid.bytes),
            compute_capability: format!("{major}.{minor}"),
            sms,
            total_mib: total as f64 / (1 << 20) as f64,
            free_mib: free as f64 / (1 << 20) as f64,
            copy_gbps,
            context_ms,
        });
    }
    Ok(CudaProbeResult { driver_api: format!("{}.{}", version / 1000, (version % 1000) / 10), devices })
}

/// Device-to-device copy bandwidth in GB/s (bytes read + written), timed with CUDA events.
fn time_copy(ctx: &std::sync::Arc<cudarc::driver::CudaContext>, free: usize) -> Result<Option<f64>, CudaError> {
    let bytes = COPY_BYTES.min(free / 4) & !0xfff;
    if bytes < (1 << 20) {
        return Ok(None);
    }
    let stream = ctx.default_stream();
    let src = stream.alloc_zeros::<u8>(bytes).map_err(driver_err("cuMemAlloc"))?;
    let mut dst = stream.alloc_zeros::<u8>(bytes).map_err(driver_err("cuMemAlloc"))?;
    stream.memcpy_dtod(&src, &mut dst).map_err(driver_err("cuMemcpyDtoDAsync"))?;
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = ctx.new_event(timing).map_err(driver_err("cuEventCreate"))?;
    let end = ctx.new_event(timing).map_err(driver_err("cuEventCreate"))?;
    start.record(&stream).map_err(driver_err("cuEventRecord"))?;
    for _ in 0..COPY_REPEATS {
        stream.memcpy_dtod(&src, &mut dst).map_err(driver_err("cuMemcpyDtoDAsync"))?;
    }
    end.record(&stream).map_err(driver_err("cuEventRecord"))?;
    end.synchronize().map_err(driver_err("cuEventSynchronize"))?;
    let ms = start.elapsed_ms(&end).map_err(driver_err("cuEventElapsedTime"))? as f64;
    Ok((ms > 0.0).then(|| 2.0 * bytes as f64 * f64::from(COPY_REPEATS) / (ms * 1e-3) / 1e9))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi writes UUIDs after their prefix.
pub fn uuid_text(b: &[std::ffi::c_char; 16]) -> String {
    let h: Vec<String> = b.iter().map(|&c| format!("{:02x}", c as u8)).collect();
    format!("{}-{}-{}-{}-{}", h[0..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..16].concat())
}

/// Probes one target: a `GPU-...` or `MIG-...` UUID, or `None` for whatever the process sees.
pub trait CudaProbe {
    fn probe(&mut self, target: Option<&str>) -> Result<CudaProbeResult, CudaError>;
}

/// The real probe: runs `<program> doctor --cuda-probe` with `CUDA_VISIBLE_DEVICES=<target>`
/// and reads its JSON ([`CudaProbeResult`], or `{"error": ...}`) from stdout.
#[derive(Debug, Clone)]
pub struct ChildCudaProbe {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl CudaProbe for ChildCudaProbe {
    fn probe(&mut self, target: Option<&str>) -> Result<CudaProbeResult, CudaError> {
        let label = target.unwrap_or("all visible devices").to_string();
        let fail = |message: String| CudaError::Probe { target: label.clone(), message };
        let mut cmd = Command::new(&self.program);
        cmd.args(["doctor", "--cuda-probe"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(t) = target {
            cmd.env("CUDA_VISIBLE_DEVICES", t);
        }
        let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run {}: {e}", self.program.display())))?;
        let begin = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if begin.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!("no answer within {} s (killed)", self.timeout.as_secs())));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        parse_probe_output(&out.stdout).map_err(|m| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail = stderr.lines().last().unwrap_or("").trim();
            fail(if tail.is_empty() { format!("{m} (exit {})", out.status) } else { format!("{m} (exit {}: {tail})", out.status) })
        })?
    }
}

/// What `parva doctor --cuda-probe` prints: the result, or the error as `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProbeOutput {
    Ok(CudaProbeResult),
    Err { error: String, no_driver: bool },
}

impl ProbeOutput {
    pub fn from_result(r: Result<CudaProbeResult, CudaError>) -> Self {
        match r {
            Ok(r) => ProbeOutput::Ok(r),
            Err(e) => ProbeOutput::Err { no_driver: e == CudaError::NoDriver, error: e.to_string() },
        }
    }
}

fn parse_probe_output(stdout: &[u8]) -> Result<Result<CudaProbeResult, CudaError>, String> {
    match serde_json::from_slice::<ProbeOutput>(stdout) {
        Ok(ProbeOutput::Ok(r)) => Ok(Ok(r)),
        Ok(ProbeOutput::Err { no_driver: true, .. }) => Ok(Err(CudaError::NoDriver)),
        Ok(ProbeOutput::Err { error, .. }) => Err(error),
        Err(e) => Err(format!("unreadable probe output ({e})")),
    }
}

/// A table of devices by target, for tests and fake nodes.
#[derive(Debug, Clone, Default)]
pub struct FakeCuda {
    /// `None`: no driver on this machine.
    pub devices: Option<Vec<(String, CudaDevice)>>,
    pub calls: Vec<String>,
}

impl CudaProbe for FakeCuda {
    fn probe(&mut self, target: Option<&str>) -> Result<CudaProbeResult, CudaError> {
        self.calls.push(target.unwrap_or("*").to_string());
        let all = self.devices.as_ref().ok_or(CudaError::NoDriver)?;
        let devices: Vec<CudaDevice> =
            all.iter().filter(|(t, _)| target.is_none_or(|want| want == t)).map(|(_, d)| d.clone()).collect();
        if devices.is_empty() {
            return Err(CudaError::Probe { target: target.unwrap_or("*").into(), message: "CUDA sees no device".into() });
        }
        Ok(CudaProbeResult { driver_api: "fake".into(), devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_written_as_nvidia_smi_writes_them() {
        let mut b = [0 as std::ffi::c_char; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8 * 17) as std::ffi::c_char;
        }
        assert_eq!(uuid_text(&b), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn probe_output_round_trips_and_names_a_missing_driver() {
        let ok = ProbeOutput::from_result(Ok(CudaProbeResult { driver_api: "12.8".into(), devices: vec![] }));
        let text = serde_json::to_vec(&ok).unwrap();
        assert_eq!(parse_probe_output(&text).unwrap().unwrap().driver_api, "12.8");
        let none = serde_json::to_vec(&ProbeOutput::from_result(Err(CudaError::NoDriver))).unwrap();
        assert_eq!(parse_probe_output(&none).unwrap(), Err(CudaError::NoDriver));
        let bad = serde_json::to_vec(&ProbeOutput::from_result(Err(CudaError::Driver { call: "cuInit", message: "CUDA_ERROR_NO_DEVICE".into() }))).unwrap();
        assert_eq!(parse_probe_output(&bad).unwrap_err(), "CUDA cuInit failed: CUDA_ERROR_NO_DEVICE");
        assert!(parse_probe_output(b"Segmentation fault").unwrap_err().starts_with("unreadable probe output"));
    }

    #[test]
    fn without_a_driver_the_probe_says_so_instead_of_panicking() {
        // This machine has no NVIDIA driver (CI and the dev machine); on a GPU machine it probes.
        match probe_visible() {
            Err(CudaError::NoDriver) => {}
            Ok(r) => assert!(!r.devices.is_empty() || r.driver_api.contains('.')),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn real_probe_opens_a_context_and_times_a_copy_on_every_visible_device() {
        let r = probe_visible().unwrap();
        assert!(!r.devices.is_empty());
        for d in &r.devices {
            assert!(d.sms > 0 && d.total_mib > 1000.0, "{d:?}");
            assert!(d.copy_gbps.is_some_and(|g| g > 10.0), "{d:?}");
        }
    }
}
