//! The explainer's pages in a real browser (headless Chromium): they load with no console
//! messages; the playground agrees with the engine on its embedded table and, with its
//! controls set, shows the engine's output size; the report shows one feature-map grid per
//! layer, a probability chart whose top class is `convnet predict`'s, and the input region of
//! a unit, without the future for a causal model.
//!
//! `.ci/run` installs Debian's `chromium`. Without it these tests fail under CI=true and are
//! skipped (with a message) elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use convnet::explain::playground::{EngineCase, engine_out};

mod common;
use common::{bars, convnet, write_idx};

fn chromium() -> Option<PathBuf> {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI=true but no Chromium at {}: .ci/run installs Debian's chromium",
        p.display()
    );
    eprintln!("skipping the browser tests: no Chromium at {}", p.display());
    None
}

/// The page's DOM after its scripts ran, and every console message.
fn load(chrome: &Path, profile: &Path, page: &Path, query: &str) -> (String, Vec<String>) {
    let url = format!("file://{}{query}", page.display());
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium runs");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The text inside the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find("</").unwrap();
    dom[start..end].to_string()
}

#[test]
fn the_playground_agrees_with_the_engine_in_a_browser() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["playground", "--out", "pg.html"]);
    assert!(ok, "{err}");
    let page = d.join("pg.html");
    let (dom, console) = load(&chrome, &d.join("profile"), &page, "?selftest=1&still=1");
    assert!(console.is_empty(), "console: {console:?}");
    let ok: usize = dom
        .split("data-ok=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("the self-check ran");
    let total = convnet::explain::playground::engine_cases().len();
    assert_eq!(ok, total, "{}", text_of(&dom, "selftest"));
    assert!(total > 1000);
    // the same table through the controls: each setting made as a person would, with an
    // input event, then the size the page shows read back
    let (dom, console) = load(&chrome, &d.join("profile"), &page, "?drive=1&still=1");
    assert!(console.is_empty(), "console: {console:?}");
    let driven: usize = dom
        .split("id=\"drive\" data-ok=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the drive ran: {}", text_of(&dom, "drive")));
    assert_eq!(driven, total, "{}", text_of(&dom, "drive"));
    // set the controls through the address and read the size the page prints
    let cases = [
        ("conv", 2, 7, 3, 2, 1, "same", 0, 0),
        ("conv", 2, 8, 4, 3, 2, "valid", 0, 0),
        ("conv", 1, 9, 3, 1, 2, "causal", 0, 0),
        ("conv", 2, 5, 5, 1, 1, "explicit", 2, 0),
        ("conv", 2, 3, 5, 1, 2, "valid", 0, 0),
        ("conv", 2, 6, 3, 1, 1, "causal", 0, 0),
        ("transposed", 2, 7, 4, 2, 1, "explicit", 1, 0),
        ("transposed", 2, 7, 3, 2, 1, "same", 0, 0),
        ("transposed", 1, 5, 3, 3, 1, "valid", 0, 2),
        ("transposed", 2, 4, 1, 2, 1, "valid", 0, 1),
        ("transposed", 2, 4, 3, 1, 1, "valid", 0, 1),
        ("transposed", 1, 6, 2, 2, 2, "explicit", 2, 1),
    ];
    for (mode, dims, n, k, s, dl, pad, p, op) in cases {
        let c = EngineCase {
            mode,
            dims,
            n,
            k,
            s,
            d: dl,
            pad,
            p,
            op,
            out: None,
        };
        let want = match engine_out(&c) {
            Some(o) if dims == 2 => format!("{o} x {o}"),
            Some(o) => o.to_string(),
            None => "-".into(),
        };
        let q = format!(
            "?mode={mode}&dims={dims}&n={n}&k={k}&s={s}&d={dl}&pad={pad}&p={p}&op={op}&still=1"
        );
        let (dom, console) = load(&chrome, &d.join("profile"), &page, &q);
        assert!(console.is_empty(), "{q}: {console:?}");
        assert_eq!(text_of(&dom, "outsize"), want, "{q}");
        if want == "-" {
            assert!(text_of(&dom, "error").starts_with("error: "), "{q}");
        }
    }
}

/// An 8x8 bar as a PNG.
fn png(path: &Path, img: &[u8]) {
    let mut buf = image::GrayImage::new(8, 8);
    for (i, &v) in img.iter().enumerate() {
        buf.put_pixel((i % 8) as u32, (i / 8) as u32, image::Luma([v]));
    }
    buf.save(path).unwrap();
}

#[test]
fn the_report_of_a_classifier_in_a_browser() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(200, 1);
    write_idx(&d.join("ti"), 3, &[200, 8, 8], &px);
    write_idx(&d.join("tl"), 1, &[200], &lab);
    let spec = "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\npadding = \"same\"\nactivation = \"relu\"\n[[model.layers]]\ntype = \"max_pool2d\"\npool_size = 2\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 6\nkernel_size = 3\npadding = \"same\"\nactivation = \"relu\"\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\n[data]\nformat = \"idx\"\ntrain_images = \"ti\"\ntrain_labels = \"tl\"\nvalidation_split = 0.0\nclass_names = [\"horizontal\", \"vertical\", \"diagonal\"]\n[train]\nepochs = 4\nbatch_size = 16\noptimizer = { type = \"adam\", lr = 0.02 }\n";
    std::fs::write(d.join("bars.toml"), spec).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(ok, "{err}");
    png(&d.join("x.png"), &px[64..128]);
    let (ok, out, err) = convnet(d, &["predict", "run", "x.png"]);
    assert!(ok, "{err}");
    let predicted = out
        .lines()
        .nth(1)
        .unwrap()
        .split('%')
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let (ok, _, err) = convnet(d, &["explain", "run", "x.png", "--out", "report.html"]);
    assert!(ok, "{err}");
    let page = d.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // self-contained: nothing fetched from anywhere
    for external in ["src=\"http", "href=\"http", "<link", "@import"] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
    let (dom, console) = load(&chrome, &d.join("profile"), &page, "?unit=2,1,2");
    assert!(console.is_empty(), "console: {console:?}");
    // one section and one feature-map grid per layer
    assert_eq!(dom.matches("<section class=\"layer\"").count(), 5);
    let grids =
        dom.matches("<div class=\"fmaps").count() - dom.matches("<div class=\"fmaps-kept").count();
    assert_eq!(grids, 5);
    assert_eq!(text_of(&dom, "top-class"), predicted);
    assert!(dom.contains("class=\"fmaps bars probs\""));
    assert!(dom.contains("id=\"gradcam\""));
    // layers.2: 3x3 same conv, 2x2 pool, 3x3 same conv: field 8 starting at -3, jump 2.
    // Unit (1, 2): rows -1..6 and columns 1..8, clipped to the 8x8 input
    let info = text_of(&dom, "rf-info");
    assert!(
        info.contains("sees input rows 0..6, columns 1..7 (receptive field 8x8)"),
        "{info}"
    );
}

#[test]
fn the_report_of_a_causal_model_and_of_a_generator_in_a_browser() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("t,v\n");
    for i in 0..300 {
        csv.push_str(&format!("{i},{:.3}\n", (i as f32 * 0.3).sin()));
    }
    std::fs::write(d.join("s.csv"), csv).unwrap();
    let spec = "[model]\ninput = [1, 24]\n[[model.layers]]\ntype = \"tcn\"\nnb_filters = 4\nkernel_size = 2\ndilations = [1, 2, 4]\n[[model.layers]]\ntype = \"dense\"\nunits = 1\n[data]\nformat = \"series\"\npath = \"s.csv\"\ntime_column = \"t\"\n[train]\nepochs = 1\n";
    std::fs::write(d.join("tcn.toml"), spec).unwrap();
    let (ok, _, err) = convnet(d, &["train", "tcn.toml", "--out", "run"]);
    assert!(ok, "{err}");
    let (ok, _, err) = convnet(
        d,
        &[
            "explain", "run", "s.csv", "--start", "100", "--out", "r.html",
        ],
    );
    assert!(ok, "{err}");
    // step 20 of the third residual block: dilations 1, 2, 4 with kernel 2 reach 14 back
    let (dom, console) = load(
        &chrome,
        &d.join("profile"),
        &d.join("r.html"),
        "?unit=0.blocks.2,20",
    );
    assert!(console.is_empty(), "console: {console:?}");
    let info = text_of(&dom, "rf-info");
    assert!(info.contains("sees input steps 6..20"), "{info}");
    assert!(info.contains("the future is not included"), "{info}");
    assert_eq!(dom.matches("<section class=\"layer\"").count(), 2);
    // a generator, explained on seeded noise
    let gan = "[generator]\ninput = [4]\n[[generator.layers]]\ntype = \"dense\"\nunits = 16\n[[generator.layers]]\ntype = \"reshape\"\ntarget_shape = [1, 4, 4]\n[[generator.layers]]\ntype = \"conv2d_transpose\"\nfilters = 1\nkernel_size = 4\nstrides = 2\npadding = \"same\"\nactivation = \"tanh\"\n[discriminator]\ninput = [1, 8, 8]\n[[discriminator.layers]]\ntype = \"flatten\"\n[[discriminator.layers]]\ntype = \"dense\"\nunits = 1\n[data]\nformat = \"idx\"\ntrain_images = \"ti\"\ntrain_labels = \"tl\"\nvalidation_split = 0.0\nnormalize = { mean = [0.5], std = [0.5] }\n[train]\ntask = \"gan\"\nepochs = 1\n";
    let (px, lab) = bars(40, 2);
    write_idx(&d.join("ti"), 3, &[40, 8, 8], &px);
    write_idx(&d.join("tl"), 1, &[40], &lab);
    std::fs::write(d.join("gan.toml"), gan).unwrap();
    let (ok, _, err) = convnet(d, &["train", "gan.toml", "--out", "g"]);
    assert!(ok, "{err}");
    let (ok, _, err) = convnet(d, &["explain", "g", "--seed", "3", "--out", "g.html"]);
    assert!(ok, "{err}");
    let (dom, console) = load(
        &chrome,
        &d.join("profile"),
        &d.join("g.html"),
        "?unit=2,5,5",
    );
    assert!(console.is_empty(), "console: {console:?}");
    assert_eq!(dom.matches("<section class=\"layer\"").count(), 3);
    let info = text_of(&dom, "rf-info");
    assert!(info.contains("sees the whole input [4]"), "{info}");
}
