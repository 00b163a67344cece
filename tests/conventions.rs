//! The conventions users bring from cargo and config-driven tools: data paths relative to the
//! spec file, run directories usable from any folder, `eval` of the test set without the
//! training data.

mod common;
use common::{MODEL, bars, convnet, write_idx};

#[test]
fn data_paths_are_relative_to_the_spec_and_runs_work_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let project = d.join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    let (px, lab) = bars(120, 1);
    write_idx(&project.join("data/train-images"), 3, &[120, 8, 8], &px);
    write_idx(&project.join("data/train-labels"), 1, &[120], &lab);
    let (px, lab) = bars(30, 2);
    write_idx(&project.join("data/test-images"), 3, &[30, 8, 8], &px);
    write_idx(&project.join("data/test-labels"), 1, &[30], &lab);
    let spec = format!(
        "{MODEL}[data]\nformat = \"idx\"\ntrain_images = \"data/train-images\"\ntrain_labels = \"data/train-labels\"\ntest_images = \"data/test-images\"\ntest_labels = \"data/test-labels\"\n[train]\nepochs = 1\nbatch_size = 16\n"
    );
    std::fs::write(project.join("bars.toml"), spec).unwrap();
    // trained from the folder above the project: the spec's paths are the spec's folder's
    let (ok, out, err) = convnet(d, &["train", "project/bars.toml", "--out", "runs/bars"]);
    assert!(ok, "{out}{err}");
    // evaluated from an unrelated folder, through an absolute path to the run
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = d.join("runs/bars");
    let (ok, out, err) = convnet(&elsewhere, &["eval", run.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 30);
    // the test set alone: run.json holds the normalisation and the class names
    for f in ["train-images", "train-labels"] {
        std::fs::remove_file(project.join("data").join(f)).unwrap();
    }
    let (ok, out2, err) = convnet(&elsewhere, &["eval", run.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let w: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v["accuracy"], w["accuracy"]);
    assert_eq!(v["loss"], w["loss"]);
    // the validation split needs the training data, and says which file is missing
    let (ok, _, err) = convnet(
        &elsewhere,
        &["eval", run.to_str().unwrap(), "--data", "val"],
    );
    assert!(!ok && err.contains("train-images"), "{err}");
}
