//! Embed an rpath to libtorch's directory so `parva-worker` runs without LD_LIBRARY_PATH.
//! torch-sys (a direct dependency, `links = "tch"`) exports that directory as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=PARVA_LIBTORCH_LIB={dir}");
    }
}
