//! Characters a Unicode-folding upstream reads as ASCII although lower-casing does not: the
//! compatibility forms of ASCII and the canonical singletons onto ASCII
//! (docs/paths.md#unicode-look-alikes). The table is derived from the Unicode data by
//! `table_matches_the_unicode_data` below, which checks it against `unicode-normalization` and
//! prints the table to paste when the data changes; shipping the data itself would add 126 KB
//! to the module for this one question.

/// Inclusive ranges, sorted, of every non-ASCII character whose compatibility decomposition
/// differs from its canonical one and contains ASCII (`ᵈ`, `ⓓ`, `ﬁ`, `ſ`, fullwidth forms,
/// no-break space, `™`), or whose canonical decomposition is ASCII while its lower case is not
/// (U+037E GREEK QUESTION MARK is `;`). The Kelvin sign is not here: it lower-cases to `k`.
const COMPATIBILITY_ASCII: &[(char, char)] = &[
    ('\u{A0}', '\u{A0}'),
    ('\u{A8}', '\u{A8}'),
    ('\u{AA}', '\u{AA}'),
    ('\u{AF}', '\u{AF}'),
    ('\u{B2}', '\u{B4}'),
    ('\u{B8}', '\u{BA}'),
    ('\u{BC}', '\u{BE}'),
    ('\u{132}', '\u{133}'),
    ('\u{13F}', '\u{140}'),
    ('\u{149}', '\u{149}'),
    ('\u{17F}', '\u{17F}'),
    ('\u{1C4}', '\u{1CC}'),
    ('\u{1F1}', '\u{1F3}'),
    ('\u{2B0}', '\u{2B0}'),
    ('\u{2B2}', '\u{2B3}'),
    ('\u{2B7}', '\u{2B8}'),
    ('\u{2D8}', '\u{2DD}'),
    ('\u{2E1}', '\u{2E3}'),
    ('\u{37A}', '\u{37A}'),
    ('\u{37E}', '\u{37E}'),
    ('\u{384}', '\u{385}'),
    ('\u{1D2C}', '\u{1D2C}'),
    ('\u{1D2E}', '\u{1D2E}'),
    ('\u{1D30}', '\u{1D31}'),
    ('\u{1D33}', '\u{1D3A}'),
    ('\u{1D3C}', '\u{1D3C}'),
    ('\u{1D3E}', '\u{1D43}'),
    ('\u{1D47}', '\u{1D49}'),
    ('\u{1D4D}', '\u{1D4D}'),
    ('\u{1D4F}', '\u{1D50}'),
    ('\u{1D52}', '\u{1D52}'),
    ('\u{1D56}', '\u{1D58}'),
    ('\u{1D5B}', '\u{1D5B}'),
    ('\u{1D62}', '\u{1D65}'),
    ('\u{1D9C}', '\u{1D9C}'),
    ('\u{1DA0}', '\u{1DA0}'),
    ('\u{1DBB}', '\u{1DBB}'),
    ('\u{1E9A}', '\u{1E9B}'),
    ('\u{1FBD}', '\u{1FBD}'),
    ('\u{1FBF}', '\u{1FC1}'),
    ('\u{1FCD}', '\u{1FCF}'),
    ('\u{1FDD}', '\u{1FDF}'),
    ('\u{1FED}', '\u{1FEF}'),
    ('\u{1FFD}', '\u{1FFE}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2017}', '\u{2017}'),
    ('\u{2024}', '\u{2026}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{203C}', '\u{203C}'),
    ('\u{203E}', '\u{203E}'),
    ('\u{2047}', '\u{2049}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{2070}', '\u{2071}'),
    ('\u{2074}', '\u{207A}'),
    ('\u{207C}', '\u{208A}'),
    ('\u{208C}', '\u{208E}'),
    ('\u{2090}', '\u{2093}'),
    ('\u{2095}', '\u{209F}'),
    ('\u{20A8}', '\u{20A8}'),
    ('\u{2100}', '\u{2103}'),
    ('\u{2105}', '\u{2106}'),
    ('\u{2109}', '\u{210E}'),
    ('\u{2110}', '\u{2113}'),
    ('\u{2115}', '\u{2116}'),
    ('\u{2119}', '\u{211D}'),
    ('\u{2120}', '\u{2122}'),
    ('\u{2124}', '\u{2124}'),
    ('\u{2128}', '\u{2128}'),
    ('\u{212C}', '\u{212D}'),
    ('\u{212F}', '\u{2131}'),
    ('\u{2133}', '\u{2134}'),
    ('\u{2139}', '\u{2139}'),
    ('\u{213B}', '\u{213B}'),
    ('\u{2145}', '\u{2149}'),
    ('\u{2150}', '\u{217F}'),
    ('\u{2189}', '\u{2189}'),
    ('\u{2460}', '\u{24EA}'),
    ('\u{2A74}', '\u{2A76}'),
    ('\u{2C7C}', '\u{2C7D}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{309B}', '\u{309C}'),
    ('\u{3200}', '\u{321E}'),
    ('\u{3220}', '\u{3243}'),
    ('\u{3250}', '\u{325F}'),
    ('\u{32B1}', '\u{32CF}'),
    ('\u{3358}', '\u{337A}'),
    ('\u{3380}', '\u{33FF}'),
    ('\u{A7F1}', '\u{A7F4}'),
    ('\u{FB00}', '\u{FB06}'),
    ('\u{FB29}', '\u{FB29}'),
    ('\u{FC5E}', '\u{FC63}'),
    ('\u{FDFA}', '\u{FDFB}'),
    ('\u{FE10}', '\u{FE10}'),
    ('\u{FE13}', '\u{FE16}'),
    ('\u{FE19}', '\u{FE19}'),
    ('\u{FE30}', '\u{FE30}'),
    ('\u{FE33}', '\u{FE38}'),
    ('\u{FE47}', '\u{FE50}'),
    ('\u{FE52}', '\u{FE52}'),
    ('\u{FE54}', '\u{FE57}'),
    ('\u{FE59}', '\u{FE5C}'),
    ('\u{FE5F}', '\u{FE66}'),
    ('\u{FE68}', '\u{FE6B}'),
    ('\u{FE70}', '\u{FE70}'),
    ('\u{FE72}', '\u{FE72}'),
    ('\u{FE74}', '\u{FE74}'),
    ('\u{FE76}', '\u{FE76}'),
    ('\u{FE78}', '\u{FE78}'),
    ('\u{FE7A}', '\u{FE7A}'),
    ('\u{FE7C}', '\u{FE7C}'),
    ('\u{FE7E}', '\u{FE7E}'),
    ('\u{FF01}', '\u{FF5E}'),
    ('\u{FFE3}', '\u{FFE3}'),
    ('\u{107A5}', '\u{107A5}'),
    ('\u{1CCD6}', '\u{1CCF9}'),
    ('\u{1D400}', '\u{1D454}'),
    ('\u{1D456}', '\u{1D49C}'),
    ('\u{1D49E}', '\u{1D49F}'),
    ('\u{1D4A2}', '\u{1D4A2}'),
    ('\u{1D4A5}', '\u{1D4A6}'),
    ('\u{1D4A9}', '\u{1D4AC}'),
    ('\u{1D4AE}', '\u{1D4B9}'),
    ('\u{1D4BB}', '\u{1D4BB}'),
    ('\u{1D4BD}', '\u{1D4C3}'),
    ('\u{1D4C5}', '\u{1D505}'),
    ('\u{1D507}', '\u{1D50A}'),
    ('\u{1D50D}', '\u{1D514}'),
    ('\u{1D516}', '\u{1D51C}'),
    ('\u{1D51E}', '\u{1D539}'),
    ('\u{1D53B}', '\u{1D53E}'),
    ('\u{1D540}', '\u{1D544}'),
    ('\u{1D546}', '\u{1D546}'),
    ('\u{1D54A}', '\u{1D550}'),
    ('\u{1D552}', '\u{1D6A3}'),
    ('\u{1D7CE}', '\u{1D7FF}'),
    ('\u{1F100}', '\u{1F10A}'),
    ('\u{1F110}', '\u{1F12E}'),
    ('\u{1F130}', '\u{1F14F}'),
    ('\u{1F16A}', '\u{1F16C}'),
    ('\u{1F190}', '\u{1F190}'),
    ('\u{1FBF0}', '\u{1FBF9}'),
];

/// Whether an upstream applying NFKC reads `c` as (or as containing) ASCII where `c` itself
/// is not ASCII and does not lower-case to ASCII.
pub(super) fn is_compatibility_ascii(c: char) -> bool {
    COMPATIBILITY_ASCII
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use unicode_normalization::char::{decompose_canonical, decompose_compatible};

    /// The definition, from the Unicode data.
    fn by_definition(c: char) -> bool {
        if c.is_ascii() {
            return false;
        }
        let (mut compat, mut canonical) = (String::new(), String::new());
        decompose_compatible(c, |d| compat.push(d));
        decompose_canonical(c, |d| canonical.push(d));
        (compat != canonical && compat.chars().any(|d| d.is_ascii()))
            || (canonical.is_ascii() && !c.to_lowercase().all(|d| d.is_ascii()))
    }

    fn ranges(pred: impl Fn(char) -> bool) -> Vec<(char, char)> {
        let mut out: Vec<(char, char)> = Vec::new();
        for c in (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|&c| pred(c))
        {
            match out.last_mut() {
                Some((_, hi)) if u32::from(*hi) + 1 == u32::from(c) => *hi = c,
                _ => out.push((c, c)),
            }
        }
        out
    }

    #[test]
    fn table_matches_the_unicode_data() {
        let expected = ranges(by_definition);
        if COMPATIBILITY_ASCII != expected.as_slice() {
            let mut text = String::from("const COMPATIBILITY_ASCII: &[(char, char)] = &[\n");
            for (lo, hi) in &expected {
                text.push_str(&format!(
                    "    ('\\u{{{:X}}}', '\\u{{{:X}}}'),\n",
                    u32::from(*lo),
                    u32::from(*hi)
                ));
            }
            text.push_str("];\n");
            panic!("the table is out of date with the Unicode data; replace it with:\n{text}");
        }
    }

    #[test]
    fn lookup_finds_every_range_and_nothing_beside_it() {
        for &(lo, hi) in COMPATIBILITY_ASCII {
            assert!(
                is_compatibility_ascii(lo) && is_compatibility_ascii(hi),
                "{lo:?}"
            );
            for outside in [u32::from(lo) - 1, u32::from(hi) + 1] {
                let c = char::from_u32(outside).unwrap();
                assert_eq!(is_compatibility_ascii(c), by_definition(c), "{c:?}");
            }
        }
        for c in ['a', 'A', '/', '\u{7F}', 'é', 'ı', '\u{212A}', '\u{10FFFF}'] {
            assert!(!is_compatibility_ascii(c), "{c:?}");
        }
    }
}
