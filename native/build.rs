use std::path::PathBuf;

// Embeds the BPF objects built by scripts/build-native.sh (bpf/build/iii_capture.bpf.o and
// iii_capture_propagation.bpf.o) so the addon ships as one file. Without them the addon still
// builds and `Capture.start` then needs `objectPath`.
fn main() {
    napi_build::setup();
    println!("cargo::rustc-check-cfg=cfg(iii_embedded_object)");
    let build = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bpf/build");
    let objects = [
        ("III_BPF_OBJECT_PATH", "iii_capture.bpf.o"),
        (
            "III_BPF_PROPAGATION_OBJECT_PATH",
            "iii_capture_propagation.bpf.o",
        ),
    ];
    let mut found = 0;
    for (variable, name) in objects {
        let object = build.join(name);
        println!("cargo:rerun-if-changed={}", object.display());
        match object.canonicalize() {
            Ok(path) => {
                println!("cargo:rustc-env={variable}={}", path.display());
                found += 1;
            }
            Err(_) => println!(
                "cargo:warning=no BPF object at {} (run scripts/build-native.sh): not embedding one",
                object.display()
            ),
        }
    }
    if found == objects.len() {
        println!("cargo:rustc-cfg=iii_embedded_object");
    }
}
