//! Series data: CSV columns, missing and non-numeric cells, interpolation, windows split by
//! time with the normalisation fitted on the training part only; the `.ts` and UCR `.tsv`
//! readers; forecast metrics and baselines against hand-computed values.

use std::path::{Path, PathBuf};

use convnet::Rng;
use convnet::data::{SeriesRead, interpolate, read_series_csv, read_ts, read_ucr_tsv, windows};
use convnet::spec::Spec;
use convnet::train::forecast::{forecast_metrics, naive, naive_scale, seasonal_naive};
use convnet::train::{Task, prepare};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn err_of<T: std::fmt::Debug>(r: convnet::Result<T>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn series_csv_columns_time_and_errors_that_name_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "s.csv",
        "day,temp,load\n1,10,100\n2,11,\n3,12,90\n4,x,95\n",
    );
    let how = |cols: Option<&[&str]>, interp: bool| SeriesRead {
        columns: cols.map(|c| c.iter().map(|s| s.to_string()).collect()),
        time_column: Some("day".into()),
        interpolate: interp,
    };
    let e = err_of(read_series_csv(&p, &how(Some(&["load"]), false)));
    assert!(e.contains("line 3, column `load`: missing value"), "{e}");
    assert!(e.contains("interpolate"), "{e}");
    let e = err_of(read_series_csv(&p, &how(Some(&["temp"]), true)));
    assert!(
        e.contains("line 5, column `temp`: \"x\" is not a number"),
        "{e}"
    );
    let e = err_of(read_series_csv(&p, &how(Some(&["lod"]), false)));
    assert!(
        e.contains("no column `lod`") && e.contains("day, temp, load"),
        "{e}"
    );
    let s = read_series_csv(&p, &how(Some(&["load"]), true)).unwrap();
    assert_eq!(s.values, vec![vec![100.0, 95.0, 90.0, 95.0]]);
    assert_eq!(
        s.times.as_deref(),
        Some(&["1", "2", "3", "4"].map(String::from)[..])
    );
    let ragged = write(dir.path(), "r.csv", "a,b\n1,2\n3\n");
    let e = err_of(read_series_csv(&ragged, &SeriesRead::default()));
    assert!(
        e.contains("line 3: 1 cells, the header has 2 columns"),
        "{e}"
    );
    let e = err_of(read_series_csv(
        &write(dir.path(), "e.csv", ""),
        &SeriesRead::default(),
    ));
    assert!(e.contains("empty file"), "{e}");
    let e = err_of(read_series_csv(
        &dir.path().join("none.csv"),
        &SeriesRead::default(),
    ));
    assert!(e.contains("none.csv"), "{e}");
}

#[test]
fn interpolation_is_linear_inside_and_nearest_at_the_ends() {
    let mut v = vec![f32::NAN, 2.0, f32::NAN, f32::NAN, 8.0, f32::NAN];
    interpolate(&mut v);
    assert_eq!(v, vec![2.0, 2.0, 4.0, 6.0, 8.0, 8.0]);
}

#[test]
fn windows_hold_the_past_and_forecast_the_future() {
    let a: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..10).map(|i| 100.0 + i as f32).collect();
    let ds = windows(&[&a, &b], &[&b], 3, 2, 2, 3..8);
    // origins 3, 5 (7 + 2 > 8 is fine: the range bounds the origin, the data the horizon)
    assert_eq!(ds.shape, vec![2, 3]);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.sample(0), &[0.0, 1.0, 2.0, 100.0, 101.0, 102.0]);
    assert_eq!(ds.target(0), &[103.0, 104.0]);
    assert_eq!(ds.sample(2), &[4.0, 5.0, 6.0, 104.0, 105.0, 106.0]);
    assert_eq!(ds.target(2), &[107.0, 108.0]);
}

fn series_spec(dir: &Path, data: &str, input: &str, out_units: usize) -> Spec {
    let text = format!(
        "[model]\ninput = {input}\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = {out_units}\n[data]\nformat = \"series\"\n{data}\n"
    );
    let p = write(dir, "spec.toml", &text);
    Spec::read(&p).unwrap()
}

#[test]
fn a_series_splits_by_time_and_normalises_with_the_training_part_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("t,x\n");
    for i in 0..100 {
        csv.push_str(&format!("{i},{}\n", i * i));
    }
    write(dir.path(), "x.csv", &csv);
    let path = dir.path().join("x.csv").display().to_string();
    let spec = series_spec(
        dir.path(),
        &format!("path = \"{path}\"\ntime_column = \"t\"\nhorizon = 3\nsplit = 80"),
        "[1, 10]",
        3,
    );
    let model = spec.build_model(&mut Rng::new(0)).unwrap();
    let task = Task::of(&spec, &model).unwrap();
    let p = prepare(&spec, &task, 0).unwrap();
    let mean = (0..80).map(|i| (i * i) as f64).sum::<f64>() / 80.0;
    assert!((p.normalize.mean[0] as f64 - mean).abs() < 1e-3 * mean);
    assert_eq!(p.target_norm.as_ref().unwrap().mean, p.normalize.mean);
    // every training target lies before the split, in time order, never shuffled across it
    for i in 0..p.train.len() {
        let last = *p.train.target(i).last().unwrap();
        assert!(last < (80 * 80) as f32, "window {i} forecasts {last}");
    }
    assert_eq!(p.train.len(), 80 - 3 - 10 + 1);
    let val = p.val.unwrap();
    assert_eq!(val.target(0)[0], (80 * 80) as f32);
    assert_eq!(val.len(), 100 - 80 - 3 + 1);
    // a model whose output does not fit targets x horizon fails before any data is read
    let bad = series_spec(
        dir.path(),
        &format!("path = \"{path}\"\nhorizon = 3"),
        "[2, 10]",
        2,
    );
    let m = bad.build_model(&mut Rng::new(0)).unwrap();
    let e = err_of(Task::of(&bad, &m));
    assert!(e.contains("2 target(s) x horizon 3 = 6"), "{e}");
    let e = err_of(prepare(&spec_with(dir.path(), &path, "split = 5"), &task, 0).map(|_| ()));
    assert!(e.contains("key `split`"), "{e}");
}

fn spec_with(dir: &Path, path: &str, extra: &str) -> Spec {
    series_spec(
        dir,
        &format!("path = \"{path}\"\ntime_column = \"t\"\nhorizon = 3\n{extra}"),
        "[1, 10]",
        3,
    )
}

#[test]
fn relative_windows_subtract_the_last_input_of_each_column() {
    let a = [1.0f32, 2.0, 4.0, 8.0, 16.0];
    let b = [10.0f32, 20.0, 30.0, 40.0, 50.0];
    let mut ds = windows(&[&a, &b], &[&b], 2, 2, 1, 2..4);
    convnet::data::make_relative(&mut ds, &[1]);
    // window [1, 2] / [10, 20] -> [-1, 0] / [-10, 0]; targets [30, 40] - 20
    assert_eq!(ds.sample(0), &[-1.0, 0.0, -10.0, 0.0]);
    assert_eq!(ds.target(0), &[10.0, 20.0]);
    assert_eq!(ds.sample(1), &[-2.0, 0.0, -10.0, 0.0]);
    assert_eq!(ds.target(1), &[10.0, 20.0]);
}

#[test]
fn ts_files_univariate_multichannel_unequal_and_bad() {
    let gp = read_ts(Path::new("data/ucr/GunPoint_TRAIN.ts"), None).unwrap();
    assert_eq!(
        (gp.series.len(), gp.channels(), gp.lengths()),
        (50, 1, vec![150])
    );
    assert_eq!(gp.class_names, ["1", "2"]);
    let header = convnet::data::class_names(Path::new("data/ucr/GunPoint_TRAIN.ts"), false);
    assert_eq!(header.unwrap(), gp.class_names);
    let test = read_ts(
        Path::new("data/ucr/GunPoint_TEST.ts"),
        Some(&gp.class_names),
    )
    .unwrap();
    assert_eq!(test.series.len(), 150);
    let dir = tempfile::tempdir().unwrap();
    let multi = write(
        dir.path(),
        "m.ts",
        "# comment\n@problemName M\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true up down\n@data\n1,2,3:4,5,6:up\n1,2:3,4:down\n",
    );
    let m = read_ts(&multi, None).unwrap();
    assert_eq!(m.channels(), 2);
    assert_eq!(m.lengths(), vec![2, 3]);
    assert_eq!(m.labels, vec![0, 1]);
    assert_eq!(m.series[0], vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    let ds = m.to_dataset();
    assert_eq!(
        (ds.shape.clone(), ds.sizes.clone()),
        (vec![2, 3], vec![vec![3], vec![2]])
    );
    assert_eq!(ds.sample(1), &[1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
    assert_eq!(ds.sample_trimmed(1), vec![1.0, 2.0, 3.0, 4.0]);
    // batches hold one length each
    assert_eq!(ds.batches(&[1, 0], 8), vec![vec![1], vec![0]]);
    let x = ds
        .batch_input(&[1], |_, x| x.iter_mut().for_each(|v| *v *= 10.0))
        .unwrap();
    assert_eq!(
        (x.shape().to_vec(), x.to_vec()),
        (vec![1, 2, 2], vec![10.0, 20.0, 30.0, 40.0])
    );
    // or, mixed, each padded to the longest with its length beside
    let x = ds
        .batch_input(&[1, 0], |_, x| x.iter_mut().for_each(|v| *v += 1.0))
        .unwrap();
    assert_eq!(x.shape(), &[2, 2, 3]);
    assert_eq!(&x.to_vec()[..6], &[2.0, 3.0, 0.0, 4.0, 5.0, 0.0]);
    assert_eq!(ds.batch_lengths(&[1, 0]), Some(vec![2, 3]));
    assert_eq!(ds.batch_lengths(&[1, 1]), None);
    assert_eq!(ds.bucketed(&[0, 1, 1, 0], 2), vec![vec![1, 1], vec![0, 0]]);
    let bad = |body: &str| {
        let p = write(
            dir.path(),
            "b.ts",
            &format!("@classLabel true a b\n@data\n{body}"),
        );
        err_of(read_ts(&p, None))
    };
    assert!(bad("1,2,3:c\n").contains("line 3: class label \"c\" is not one of the classes a, b"));
    assert!(bad("1,x,3:a\n").contains("line 3, dimension 1: \"x\" is not a number"));
    assert!(bad("1,?,3:a\n").contains("missing value"));
    assert!(bad("1,2:3:a\n1,2,3:a\n").contains("dimension 2 has 1 values"));
    let p = write(dir.path(), "n.ts", "@classLabel false\n@data\n1,2\n");
    assert!(err_of(read_ts(&p, None)).contains("labelled"));
    let p = write(dir.path(), "t.ts", "@timeStamps true\n@data\n");
    assert!(err_of(read_ts(&p, None)).contains("time stamps"));
}

#[test]
fn ucr_tsv_labels_first_with_nan_padding_for_shorter_series() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "x.tsv",
        "10\t1\t2\t3\n2\t4\t5\tNaN\n10\t6\t7\t8\n",
    );
    let s = read_ucr_tsv(&p, None).unwrap();
    assert_eq!(s.class_names, ["2", "10"]); // numeric order
    assert_eq!(convnet::data::class_names(&p, true).unwrap(), s.class_names);
    assert_eq!(s.labels, vec![1, 0, 1]);
    assert_eq!(s.lengths(), vec![2, 3]);
    let p = write(dir.path(), "y.tsv", "1\t1\tNaN\t3\n");
    assert!(err_of(read_ucr_tsv(&p, None)).contains("line 1, values: missing value"));
}

#[test]
fn forecast_metrics_and_baselines_by_hand() {
    let m = forecast_metrics(&[1.0, 2.0, 0.0], &[2.0, 2.0, 0.0], Some(&[0.5, 0.5, 0.5]));
    assert!((m.mae - 1.0 / 3.0).abs() < 1e-12);
    assert!((m.rmse - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    // 200 * |2 - 1| / (2 + 1) for the first, 0 for the others (0 / 0 counts 0)
    assert!((m.smape - 200.0 / 3.0 / 3.0).abs() < 1e-9);
    assert!((m.mase.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let v = [1.0, 3.0, 2.0, 5.0, 4.0, 7.0];
    assert_eq!(naive(&v, 4, 2), vec![5.0, 5.0]);
    assert_eq!(seasonal_naive(&v, 4, 2, 2), vec![2.0, 5.0]);
    assert_eq!(seasonal_naive(&v, 4, 3, 2), vec![2.0, 5.0, 2.0]);
    // mean |v[t] - v[t-1]| over t in 1..4: (2 + 1 + 3) / 3
    assert!((naive_scale(&v, 1, 4) - 2.0).abs() < 1e-12);
}
