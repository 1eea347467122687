//! Property test: over generated fstabs (comments, blank lines, tabs and spaces, `UUID=`/`LABEL=`
//! swap, `\040` names, lines with missing fields, CRLF endings, no final newline, non-UTF-8
//! bytes), commenting out swap changes exactly the swap entry lines, each only by gaining the
//! marker in front, and is idempotent.

use node_agent::prepare::swap::{MARKER, comment_swap_entries, is_swap_entry};
use proptest::prelude::*;

/// One generated line (without its ending) and whether it is an active swap entry.
#[derive(Debug, Clone)]
struct Line {
    bytes: Vec<u8>,
    swap: bool,
}

fn sep() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 1..4)
}

/// A field: no whitespace, no line breaks, may hold non-UTF-8 bytes.
fn field() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"/swap.img".to_vec()),
        Just(b"UUID=5f8e7a0c-3d41-4b8e".to_vec()),
        Just(b"LABEL=swap".to_vec()),
        Just(b"/var/my\\040swap".to_vec()),
        Just(b"none".to_vec()),
        prop::collection::vec(
            any::<u8>().prop_filter("no whitespace", |b| !matches!(
                b,
                b' ' | b'\t' | b'\n' | b'\r'
            )),
            1..12
        ),
    ]
}

fn fs_type() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"swap".to_vec()),
        1 => Just(b"ext4".to_vec()),
        1 => Just(b"Swap".to_vec()),
        1 => Just(b"swapfs".to_vec()),
        1 => Just(b"none".to_vec()),
    ]
}

fn entry() -> impl Strategy<Value = Line> {
    (
        prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 0..2),
        field().prop_filter("not a comment", |f| f[0] != b'#'),
        sep(),
        field(),
        sep(),
        fs_type(),
        prop::collection::vec((sep(), field()), 0..4),
        prop::option::of(sep()),
    )
        .prop_map(|(lead, spec, s1, mnt, s2, ty, rest, trail)| {
            let swap = ty == b"swap";
            let mut bytes = lead;
            bytes.extend(spec);
            bytes.extend(s1);
            bytes.extend(mnt);
            bytes.extend(s2);
            bytes.extend(ty);
            for (s, f) in rest {
                bytes.extend(s);
                bytes.extend(f);
            }
            bytes.extend(trail.unwrap_or_default());
            Line { bytes, swap }
        })
}

fn other() -> impl Strategy<Value = Line> {
    prop_oneof![
        // comments, also commented-out swap entries and leading whitespace
        (
            prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 0..3),
            prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..30)
        )
            .prop_map(|(lead, body)| {
                let mut bytes = lead;
                bytes.push(b'#');
                bytes.extend(body.into_iter().filter(|b| *b != b'\r'));
                bytes.extend_from_slice(b" /swap.img none swap sw 0 0");
                Line { bytes, swap: false }
            }),
        // blank lines
        prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 0..4)
            .prop_map(|bytes| Line { bytes, swap: false }),
        // lines with missing fields, even "swap" in second place
        (
            field(),
            prop::option::of((sep(), prop_oneof![Just(b"swap".to_vec()), field()]))
        )
            .prop_filter("not a comment", |(f, _)| f[0] != b'#')
            .prop_map(|(f, rest)| {
                let mut bytes = f;
                if let Some((s, g)) = rest {
                    bytes.extend(s);
                    bytes.extend(g);
                }
                Line { bytes, swap: false }
            }),
    ]
}

fn fstab() -> impl Strategy<Value = (Vec<Line>, bool, bool)> {
    (
        prop::collection::vec(prop_oneof![entry(), other()], 0..12),
        any::<bool>(), // CRLF endings
        any::<bool>(), // final newline
    )
}

fn render(lines: &[Line], crlf: bool, final_newline: bool) -> Vec<Vec<u8>> {
    let n = lines.len();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut b = l.bytes.clone();
            if i + 1 < n || final_newline {
                b.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn only_swap_entries_change_and_only_by_the_marker((lines, crlf, final_newline) in fstab()) {
        let rendered = render(&lines, crlf, final_newline);
        let input: Vec<u8> = rendered.concat();
        let (out, entries) = comment_swap_entries(&input);

        let mut want = Vec::new();
        for (line, bytes) in lines.iter().zip(&rendered) {
            if line.swap {
                want.extend_from_slice(MARKER);
            }
            want.extend_from_slice(bytes);
        }
        prop_assert_eq!(&out, &want);
        prop_assert_eq!(entries.len(), lines.iter().filter(|l| l.swap).count());

        for l in out.split(|b| *b == b'\n') {
            prop_assert!(!is_swap_entry(l), "active swap entry left: {:?}", String::from_utf8_lossy(l));
        }
        let (again, none) = comment_swap_entries(&out);
        prop_assert_eq!(again, out);
        prop_assert!(none.is_empty());
    }
}
