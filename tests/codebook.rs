//! SPEC 5: Philox4x32-10 known-answer vectors and the codebook test vectors of
//! `spec/codebook_ref_output.txt`, bit for bit.

use gddcm::codebook::{philox4x32_10, Codebooks, STREAM_CODEBOOK};

#[test]
fn philox_known_answers() {
    // Random123 known-answer tests (kat_vectors), as checked by spec/codebook_ref.py.
    let m = u32::MAX;
    assert_eq!(philox4x32_10([0; 4], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox4x32_10([m; 4], [m, m]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox4x32_10([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

/// `((i, j), raw Philox words of block 0, f32 bit patterns of the first 8 values)`.
type Vector = ((u32, u32), [u32; 4], [u32; 8]);

#[test]
// The decimal values are SPEC 5's printed 9-digit renderings; the bit patterns decide.
#[allow(clippy::excessive_precision)]
fn codebook_test_vectors_bit_exact() {
    let seed = 0x0123_4567_89ab_cdef;
    let cb = Codebooks::new(seed, 8);
    let cases: [Vector; 4] = [
        (
            (0, 0),
            [0xb850222e, 0xc58cb04b, 0x14a7a020, 0x7a84fff9],
            [0x3de16bed, 0xbf4d97ec, 0xc00e4db4, 0x3e9a0fb4, 0xbec317b0, 0x3f4b1beb, 0xbee139af, 0xbfa4ffaf],
        ),
        (
            (0, 1),
            [0xd9412d6a, 0x59dd3f68, 0x9d46a012, 0x5d27ddd9],
            [0xbeadf295, 0x3eec2e89, 0xbf25c8bc, 0x3f3eb610, 0xbf8e8bb1, 0x3f8f3a24, 0xbf97706a, 0x3fb2242d],
        ),
        (
            (1, 0),
            [0xfa9dff5e, 0x6c10844b, 0x6979c717, 0x0590ff83],
            [0xbe3a565c, 0x3dc670cf, 0x3fa8de28, 0x3e39b901, 0xbea5e164, 0xbdf8db0e, 0x3eb1de69, 0x3f6b5b7a],
        ),
        (
            (299, 4095),
            [0x690f3a5e, 0x248085fb, 0x8c990b0e, 0x90f60e22],
            [0x3f557bb7, 0x3f856217, 0xbf802a0b, 0xbee2a91d, 0xbf12c73f, 0x3ee2d04e, 0xbd2ce2dd, 0xbf6d87da],
        ),
    ];
    for ((i, j), raw, bits) in cases {
        assert_eq!(
            philox4x32_10([0, j, i, STREAM_CODEBOOK], [seed as u32, (seed >> 32) as u32]),
            raw,
            "raw block i={i} j={j}"
        );
        let got: Vec<u32> = cb.entry(STREAM_CODEBOOK, i, j).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, bits, "entry i={i} j={j}");
    }
    let first = Codebooks::new(seed, 4).entry(STREAM_CODEBOOK, 0, 0);
    assert_eq!(first, vec![0.110069133f32, -0.803099394, -2.22349262, 0.300901055]);
}

#[test]
fn full_entry_moments_match_reference() {
    // codebook_ref_output.txt: one 3072-dim entry has mean −0.0177 and variance 1.0209.
    let v = Codebooks::new(0x0123_4567_89ab_cdef, 3072).entry(STREAM_CODEBOOK, 0, 0);
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / 3072.0;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / 3072.0;
    assert!((mean - -0.0177).abs() < 5e-5, "mean {mean}");
    assert!((var - 1.0209).abs() < 5e-5, "var {var}");
}

#[test]
fn entries_do_not_depend_on_dimension_prefix() {
    // Element e depends only on (seed, i, j, e): a longer entry extends a shorter one.
    let a = Codebooks::new(5, 10).entry(STREAM_CODEBOOK, 2, 3);
    let b = Codebooks::new(5, 16).entry(STREAM_CODEBOOK, 2, 3);
    assert_eq!(a[..], b[..10]);
}
