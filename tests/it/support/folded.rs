//! Folded stacks (`root;...;leaf VALUE`) and the numbers flame graphs print.
use std::collections::BTreeMap;

/// Parses `root;...;leaf VALUE` lines; panics on a malformed line.
pub fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stack, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line without a value: {l:?}\n{text}"));
            let value: u64 = value
                .parse()
                .unwrap_or_else(|_| panic!("folded line with a bad value: {l:?}\n{text}"));
            assert!(!stack.is_empty(), "folded line without frames: {l:?}");
            (stack.split(';').map(str::to_string).collect(), value)
        })
        .collect()
}

/// Sum of the values of the folded lines, per leaf (innermost) frame.
pub fn folded_by_leaf(lines: &[(Vec<String>, u64)]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (frames, v) in lines {
        *out.entry(frames.last().cloned().unwrap_or_default())
            .or_default() += v;
    }
    out
}

/// `1234567` as `1,234,567` (how inferno prints sample counts).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded() {
        let lines = parse_folded("_start;main;alloc_a 100\nmain;alloc_b 5\nmain;x;alloc_a 1\n");
        assert_eq!(
            lines[0],
            (
                vec!["_start".to_string(), "main".into(), "alloc_a".into()],
                100
            )
        );
        let by_leaf = folded_by_leaf(&lines);
        assert_eq!(by_leaf["alloc_a"], 101);
        assert_eq!(by_leaf["alloc_b"], 5);
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
