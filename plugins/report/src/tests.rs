//! Stage-level tests of `report`'s params through the SDK harness.

use anoflow_sdk::harness::StageHarness;

#[test]
fn bad_params_are_refused_by_name() {
    let err = StageHarness::new::<crate::report::Report>(serde_json::json!({"tile": 0})).err().unwrap();
    assert!(err.message.contains("param `tile`: 0 is out of range: expected a value >= 1"), "{err}");
    let err = StageHarness::new::<crate::report::Report>(serde_json::json!({"failure": 1})).err().unwrap();
    assert!(err.message.contains("unknown param `failure` (did you mean `failures`?)"), "{err}");
}
