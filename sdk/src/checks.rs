//! The checks every output of a stage goes through, the same in the host and in the test
//! harness: declared port, declared kind, one value per single port, the declared size
//! relation to an input, and no NaN or infinity in score maps, feature maps and scalars.
//! A value that fails is blamed on the stage that produced it.

use crate::{
    descriptor::StageDescriptor,
    value::{PortValue, Value},
};

/// The first problem with a stage's outputs for one sample, given the sample's inputs.
pub fn check_outputs(desc: &StageDescriptor, inputs: &[PortValue], outs: &[PortValue]) -> Result<(), String> {
    for (i, o) in outs.iter().enumerate() {
        let Some(spec) = desc.output_port(&o.port) else {
            return Err(format!("the stage produced an undeclared output `{}`", o.port));
        };
        if !spec.kind.accepts(o.value.kind()) {
            return Err(format!(
                "output `{}` is declared {} but the stage produced {}",
                o.port,
                spec.kind,
                o.value.kind()
            ));
        }
        if !spec.multiple && outs[..i].iter().any(|prev| prev.port == o.port) {
            return Err(format!("output `{}` takes one value per sample, the stage produced several", o.port));
        }
        if !spec.same_size_as.is_empty() {
            let input = inputs.iter().find(|p| p.port == spec.same_size_as);
            if let (Some((h, w)), Some((ih, iw))) = (pixel_size(&o.value), input.and_then(|p| pixel_size(&p.value))) {
                if (h, w) != (ih, iw) {
                    return Err(format!(
                        "output `{}` is {h}x{w} (height x width), but the stage declares it the same size as input `{}`, which is {ih}x{iw}",
                        o.port, spec.same_size_as
                    ));
                }
            }
        }
        if let Some(msg) = non_finite(&o.value) {
            return Err(format!("output `{}` {msg}", o.port));
        }
    }
    Ok(())
}

/// Height and width of a value laid out on the image grid.
fn pixel_size(v: &Value) -> Option<(usize, usize)> {
    match v {
        Value::Image(x) => Some((x.height(), x.width())),
        Value::Mask(x) => Some((x.height(), x.width())),
        Value::ScoreMap(x) => Some((x.height(), x.width())),
        Value::PointCloud(x) => Some((x.height(), x.width())),
        _ => None,
    }
}

/// Where a score map, feature map or scalar holds NaN or infinity: no stage downstream can
/// do anything sensible with it, so the producer is blamed at once.
pub fn non_finite(v: &Value) -> Option<String> {
    let (data, w, c) = match v {
        Value::ScoreMap(m) => (m.data(), m.width(), 1),
        Value::FeatureMap(f) => (f.data(), f.width(), f.channels()),
        Value::Scalar(x) if !x.is_finite() => return Some(format!("is {x}")),
        _ => return None,
    };
    let i = data.iter().position(|x| !x.is_finite())?;
    let cell = i / c.max(1);
    Some(format!("holds {} at (y {}, x {})", data[i], cell / w.max(1), cell % w.max(1)))
}

/// Descriptor problems the host refuses a library for: a size relation naming no input, a
/// config schema that is not a JSON object.
pub fn check_descriptor(desc: &StageDescriptor) -> Result<(), String> {
    if !matches!(serde_json::from_str::<serde_json::Value>(&desc.config_schema), Ok(serde_json::Value::Object(_))) {
        return Err(format!("stage `{}`: its config schema is not a JSON object", desc.name));
    }
    for out in desc.outputs.iter().filter(|o| !o.same_size_as.is_empty()) {
        if desc.input_port(&out.same_size_as).is_none() {
            return Err(format!(
                "stage `{}`: output `{}` is declared the same size as input `{}`, which the stage does not have",
                desc.name, out.name, out.same_size_as
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        descriptor::StageDescriptor,
        value::{Mask, ScoreMap, ValueKind},
    };

    fn pv(port: &str, value: Value) -> PortValue {
        PortValue { port: port.into(), source: "".into(), value }
    }

    fn binarizer() -> StageDescriptor {
        let mut d = StageDescriptor::new("b", "b").input("score", ValueKind::ScoreMap, "in").output_same_size(
            "mask",
            ValueKind::Mask,
            "score",
            "out",
        );
        d.config_schema = "{}".into();
        d
    }

    #[test]
    fn a_size_relation_is_checked_against_the_input() {
        let score = ScoreMap::new(4, 6, vec![0.0; 24]).unwrap();
        let inputs = [pv("score", score.into())];
        let good = [pv("mask", Mask::new(4, 6, vec![0; 24]).unwrap().into())];
        assert_eq!(check_outputs(&binarizer(), &inputs, &good), Ok(()));
        let bad = [pv("mask", Mask::new(2, 3, vec![0; 6]).unwrap().into())];
        let err = check_outputs(&binarizer(), &inputs, &bad).unwrap_err();
        assert!(err.contains("output `mask` is 2x3") && err.contains("input `score`, which is 4x6"), "{err}");
    }

    #[test]
    fn one_value_per_single_port_and_no_nan() {
        let d = StageDescriptor::new("s", "s").output("score", ValueKind::ScoreMap, "out");
        let map = ScoreMap::new(1, 2, vec![0.0, 1.0]).unwrap();
        let twice = [pv("score", map.clone().into()), pv("score", map.into())];
        assert!(check_outputs(&d, &[], &twice).unwrap_err().contains("one value per sample"));
        let nan = [pv("score", ScoreMap::new(1, 2, vec![0.0, f32::NAN]).unwrap().into())];
        assert_eq!(check_outputs(&d, &[], &nan).unwrap_err(), "output `score` holds NaN at (y 0, x 1)");
    }

    #[test]
    fn a_relation_to_an_unknown_input_is_a_descriptor_error() {
        assert_eq!(check_descriptor(&binarizer()), Ok(()));
        let mut d = StageDescriptor::new("b", "b").output_same_size("mask", ValueKind::Mask, "scor", "out");
        d.config_schema = "{}".into();
        assert!(check_descriptor(&d).unwrap_err().contains("input `scor`, which the stage does not have"));
        d.config_schema = "".into();
        assert!(check_descriptor(&d).unwrap_err().contains("config schema is not a JSON object"));
    }
}
