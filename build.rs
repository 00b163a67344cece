//! Compiles the ONNX schema (proto/onnx.proto3) into prost message types, with protox: no
//! `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto3");
    let descriptors = protox::compile(["onnx.proto3"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
