use std::path::PathBuf;

// Embeds the BPF object built by scripts/build-native.sh (bpf/build/iii_capture.bpf.o, or the
// path in III_BPF_OBJECT) so the addon ships as one file. Without it the addon still builds and
// `Capture.start` then needs `objectPath`.
fn main() {
    napi_build::setup();
    println!("cargo::rustc-check-cfg=cfg(iii_embedded_object)");
    println!("cargo:rerun-if-env-changed=III_BPF_OBJECT");
    let object = std::env::var_os("III_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bpf/build/iii_capture.bpf.o")
        });
    println!("cargo:rerun-if-changed={}", object.display());
    match object.canonicalize() {
        Ok(path) => {
            println!("cargo:rustc-cfg=iii_embedded_object");
            println!("cargo:rustc-env=III_BPF_OBJECT_PATH={}", path.display());
        }
        Err(_) => println!(
            "cargo:warning=no BPF object at {} (run scripts/build-native.sh): not embedding one",
            object.display()
        ),
    }
}
