//! The seeded fixture weights (tests/fixtures/README.md) against the Python generator.

mod support;

use support::seeded_values;

#[test]
fn seeded_values_match_the_python_generator() {
    // tools/fixtures/seeded.py prints these for uniform(0x0123456789ABCDEF, 3, 4).
    let got: Vec<f64> = seeded_values(0x0123_4567_89AB_CDEF, 3, 4, 0.0, 1.0).iter().map(|&v| v as f64).collect();
    let want = [0.6243241429328918, 0.3812503218650818, -0.5499263405799866, -0.4867141842842102];
    assert_eq!(got, want);
    // offset + scale·u in f64, rounded once.
    let shifted = seeded_values(0x0123_4567_89AB_CDEF, 3, 5, 1.0, 0.17);
    assert_eq!(shifted[0], (1.0 + 0.17 * want[0]) as f32);
    assert_eq!(shifted.len(), 5);
}
