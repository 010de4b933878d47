//! The accumulators through their binary file: shards merge exactly, corrupt files are refused.

use super::*;
use crate::testing::realistic;
use accumulate::merge;
use anoflow_sdk::harness::scratch_dir;
use anoflow_sdk::value::PortValue;
use results::MEAN;

fn accumulate(samples: &[(SampleMeta, Vec<PortValue>)]) -> Accumulators {
    let mut acc = Accumulators::new();
    for (m, inputs) in samples {
        acc.add(&sample_view(&Sample::new(m, inputs), &ExpectedSources::default()).unwrap()).unwrap();
    }
    acc
}

#[test]
fn shards_merge_exactly_through_the_binary_file() {
    let samples = realistic(24, &["bottle", "cable"], 7);
    let mut whole = accumulate(&samples);
    let expected = results::compute(&mut whole, 0.3);

    let dir = scratch_dir("metrics-merge");
    let (a, b) = samples.split_at(10);
    // Shard a is sorted (written after finish), shard b is written as is: both paths merge.
    let mut acc_a = accumulate(a);
    let mut acc_b = accumulate(b);
    finish_outputs(&mut acc_a, &dir.join("a"), 0.3, true).unwrap();
    acc_b.write(&dir.join("b.bin")).unwrap();
    let (merged, files) =
        merge_files(&[&dir.join("a").join(ACCUMULATORS_FILE), &dir.join("b.bin")], &dir.join("m"), 0.3).unwrap();
    assert_eq!(merged.records.len(), expected.records.len());
    for (m, e) in merged.records.iter().zip(&expected.records) {
        assert_eq!(m, e, "merged shards must give the same figures, bit for bit");
    }
    assert_eq!(merged, expected);
    assert!(files.contains(&"results.json".to_string()));

    // Merging a shard with itself is refused.
    let again = Accumulators::read(&dir.join("b.bin")).unwrap();
    let err = merge(Accumulators::read(&dir.join("b.bin")).unwrap(), again).unwrap_err();
    assert!(err.to_string().contains("is in both results"), "{err}");

    // The figures are sane for this data: the score separates, the masks overlap the defects.
    let auroc = expected.get(MEAN, "scorer.score", "pixel_auroc", "all", "pixels").unwrap();
    assert!(auroc > 0.9 && auroc < 1.0, "{auroc}");
    let f1 = expected.get(MEAN, "thr.mask", "f1", "anomalous", "pixels").unwrap();
    assert!(f1 > 0.2 && f1 < 1.0, "{f1}");
}

#[test]
fn corrupt_accumulator_files_are_rejected() {
    let mut acc = accumulate(&realistic(3, &["c"], 1));
    let bytes = acc.to_bytes().unwrap();
    assert!(Accumulators::from_bytes(&bytes[..bytes.len() - 3], "x.bin").is_err());
    let err = Accumulators::from_bytes(b"PNG.....", "x.bin").unwrap_err();
    assert!(err.to_string().contains("x.bin: "), "{err}");
    let back = Accumulators::from_bytes(&bytes, "x.bin").unwrap();
    let mut again = back.clone();
    assert_eq!(again.to_bytes().unwrap(), bytes);
}
