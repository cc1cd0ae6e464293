use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The server half of the generated code only when the server is built.
    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_server(server)
        .file_descriptor_set_path(out_dir.join("facevault_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                PathBuf::from("proto/facevault/v1/facevault.proto"),
                PathBuf::from("proto/facevault/v1/audit.proto"),
            ],
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
