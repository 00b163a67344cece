//! A run directory is data, not trust: damaged weights, a spec edited after training, forged
//! loop positions and optimizer slots are refused with the file and the field named, and a
//! damaged checkpoint offers the one before it, from which the run still ends as an
//! uninterrupted one would.

use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::{convnet, setup};

/// A safetensors file's tensors as (shape, values), by name.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
/// Its metadata.
type Meta = BTreeMap<String, String>;

/// Rewrite the safetensors file at `p` through `f` (tensors as (shape, values); metadata),
/// as another tool would: without convnet's checksum.
fn rewrite(p: &Path, f: impl FnOnce(&mut Tensors, &mut Meta)) {
    let (t, mut meta) = convnet::io::load(p).unwrap();
    let mut t: BTreeMap<_, _> = t
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.to_vec())))
        .collect();
    meta.remove(convnet::io::CHECKSUM);
    f(&mut t, &mut meta);
    let tensors = t.into_iter().map(|(k, (s, v))| (k, s, v)).collect();
    let meta = Some(meta.into_iter().collect());
    std::fs::write(p, common::safetensors_plain(tensors, meta)).unwrap();
}

fn fails(d: &Path, args: &[&str], want: &[&str]) {
    let (ok, out, err) = convnet(d, args);
    assert!(!ok, "convnet {args:?} succeeded: {out}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(
            err.contains(w),
            "convnet {args:?}: expected `{w}` in:\n{err}"
        );
    }
}

fn copy_run(d: &Path, from: &str, to: &str) {
    std::fs::create_dir_all(d.join(to)).unwrap();
    for e in std::fs::read_dir(d.join(from)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(to).join(e.file_name())).unwrap();
    }
}

#[test]
fn damaged_or_edited_runs_are_refused_with_the_file_and_the_field() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(ok, "{err}");

    // one bit flipped in the weights' data
    copy_run(d, "run", "flipped");
    let p = d.join("flipped/best.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 7] ^= 0x10;
    std::fs::write(&p, b).unwrap();
    fails(
        d,
        &["eval", "flipped"],
        &["best.safetensors", "damaged", "checksum"],
    );

    // NaN weights written by another tool (no checksum)
    copy_run(d, "run", "nan");
    rewrite(&d.join("nan/best.safetensors"), |t, _| {
        t.get_mut("layers.0.weight").unwrap().1[3] = f32::NAN;
    });
    fails(
        d,
        &["eval", "nan"],
        &["best.safetensors", "`layers.0.weight`", "NaN at index 3"],
    );

    // spec.toml edited after training: another activation, another optimizer
    for (name, from, to) in [
        ("act", "activation = \"relu\"", "activation = \"tanh\""),
        ("opt", "type = \\\"adam\\\"", "type = \\\"sgd\\\""),
    ] {
        copy_run(d, "run", name);
        let p = d.join(name).join("spec.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text
            .replace(from, to)
            .replace(&from.replace('\\', ""), &to.replace('\\', ""));
        assert_ne!(text, edited, "{name}");
        std::fs::write(&p, edited).unwrap();
        fails(
            d,
            &["eval", name],
            &["best.safetensors", "another spec", "spec.toml"],
        );
    }
    // comments and layout are not edits
    copy_run(d, "run", "comment");
    let p = d.join("comment/spec.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("# a note\n{}", text.replace(" = ", "="))).unwrap();
    let (ok, _, err) = convnet(d, &["eval", "comment"]);
    assert!(ok, "{err}");
}

#[test]
fn forged_checkpoints_are_refused_and_a_damaged_one_offers_the_previous() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "full"]);
    assert!(ok, "{err}");
    // a run stopped after 2 of its 3 epochs: resume from a copy of full's state at epoch 2
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "part", "--epochs", "2"]);
    assert!(ok, "{err}");
    let prev = d.join("part/checkpoint.prev.safetensors");
    assert!(prev.exists(), "the checkpoint before the latest is kept");

    let forged = |name: &str, f: &dyn Fn(&mut Tensors, &mut Meta)| {
        copy_run(d, "part", name);
        rewrite(&d.join(name).join("checkpoint.safetensors"), |t, m| f(t, m));
    };
    forged("epoch", &|_, m| {
        let s = m["loop"].replace("\"epoch\":2", "\"epoch\":999999");
        m.insert("loop".into(), s);
    });
    fails(
        d,
        &["train", "--resume", "epoch", "--epochs", "3"],
        &[
            "checkpoint.safetensors",
            "loop state is inconsistent",
            "epoch 999999",
        ],
    );
    forged("step", &|_, m| {
        let s = m["loop"].replace("\"step\":0", "\"step\":4000000000");
        m.insert("loop".into(), s);
    });
    fails(
        d,
        &["train", "--resume", "step", "--epochs", "3"],
        &["checkpoint.safetensors", "step 4000000000"],
    );
    for (name, slot) in [
        ("slot", "999999999999"),
        ("slotmax", "18446744073709551615"),
        ("slotneg", "-1"),
    ] {
        forged(name, &|t, _| {
            t.insert(
                format!("state.layers.0.weight.{slot}"),
                (vec![1], vec![0.0]),
            );
        });
        fails(
            d,
            &["train", "--resume", name, "--epochs", "3"],
            &[
                "checkpoint.safetensors",
                &format!("`state.layers.0.weight.{slot}`"),
            ],
        );
    }
    forged("short", &|t, _| {
        t.insert("state.layers.0.weight.0".into(), (vec![2], vec![0.0, 0.0]));
    });
    fails(
        d,
        &["train", "--resume", "short", "--epochs", "3"],
        &["2 values for a parameter of 36"],
    );
    forged("stranger", &|t, _| {
        t.insert("state.layers.9.weight.0".into(), (vec![1], vec![0.0]));
    });
    fails(
        d,
        &["train", "--resume", "stranger", "--epochs", "3"],
        &["no parameter `layers.9.weight`"],
    );

    // a damaged latest checkpoint: refused, the previous one offered, and resuming from it
    // ends with the uninterrupted run's weights
    let p = d.join("part/checkpoint.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x01;
    std::fs::write(&p, b).unwrap();
    fails(
        d,
        &["train", "--resume", "part", "--epochs", "3"],
        &["damaged", "(epoch 2, step 0) is intact", "--from-previous"],
    );
    let (ok, _, err) = convnet(
        d,
        &[
            "train",
            "--resume",
            "part",
            "--epochs",
            "3",
            "--from-previous",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("resuming at epoch 2, step 0"), "{err}");
    let a = std::fs::read(d.join("full/last.safetensors")).unwrap();
    let b = std::fs::read(d.join("part/last.safetensors")).unwrap();
    assert_eq!(
        a, b,
        "resumed from the previous checkpoint, the weights differ"
    );
    // a crash between the two renames: no latest, the previous is used and said so
    copy_run(d, "full", "renamed");
    std::fs::remove_file(d.join("renamed/checkpoint.safetensors")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "--resume", "renamed", "--epochs", "4"]);
    assert!(
        ok && err.contains("resuming from checkpoint.prev.safetensors"),
        "{err}"
    );
}
