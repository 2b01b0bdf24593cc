use proptest::prelude::*;

use super::*;

fn entry(path: &str, size: u64, mode: u32, content: &[u8]) -> CollectionEntry {
    CollectionEntry {
        path: path.to_owned(),
        size,
        mode,
        digest: Digest::sha256_of(content),
    }
}

/// The exact bytes of a small collection: changing them changes every collection digest
/// ever published, so this test pins the format.
#[test]
fn golden_encoding() {
    let collection = Collection::new(vec![
        entry("tokenizer/tokenizer.json", 2, 0o644, b"tk"),
        entry("config.json", 2, 0o644, b"{}"),
        entry("run.sh", 0, 0o755, b""),
    ])
    .unwrap();
    let expected = concat!(
        r#"{"format":"kraken.collection","version":1,"entries":["#,
        r#"{"path":"config.json","size":2,"mode":"0644","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"#,
        r#"{"path":"run.sh","size":0,"mode":"0755","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"#,
        r#"{"path":"tokenizer/tokenizer.json","size":2,"mode":"0644","digest":"sha256:"#,
    );
    let encoded = String::from_utf8(collection.encode()).unwrap();
    assert!(encoded.starts_with(expected), "{encoded}");
    assert!(encoded.ends_with(&format!("{}\"}}]}}", Digest::sha256_of(b"tk").hex())));
    assert_eq!(Collection::decode(encoded.as_bytes()).unwrap(), collection);
    assert!(Collection::looks_like(encoded.as_bytes()));
    assert!(!Collection::looks_like(b"{\"format\":\"other\"}"));
}

#[test]
fn empty_collection_round_trips() {
    let empty = Collection::default();
    assert_eq!(
        empty.encode(),
        br#"{"format":"kraken.collection","version":1,"entries":[]}"#
    );
    assert_eq!(Collection::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn unsafe_paths_are_refused() {
    for path in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "a\\b",
        "a\0b",
    ] {
        assert!(
            matches!(validate_path(path), Err(CollectionError::Path { .. })),
            "{path:?} accepted"
        );
    }
    assert!(validate_path(&"a".repeat(256)).is_err());
    assert!(validate_path(&["a"; 3000].join("/")).is_err());
    for path in [
        "a",
        "a/b.c",
        "..a",
        "a..",
        "tokenizer/tokenizer.json",
        "ünïcode/🦀",
    ] {
        validate_path(path).unwrap();
    }
}

#[test]
fn decode_refuses_hostile_collections() {
    let digest = Digest::sha256_of(b"x");
    let one = |path: &str, mode: &str| {
        format!(
            r#"{{"format":"kraken.collection","version":1,"entries":[{{"path":{},"size":1,"mode":"{mode}","digest":"{digest}"}}]}}"#,
            serde_json::to_string(path).unwrap()
        )
    };
    assert!(Collection::decode(one("ok", "0644").as_bytes()).is_ok());
    assert!(matches!(
        Collection::decode(one("../etc/passwd", "0644").as_bytes()),
        Err(CollectionError::Path { .. })
    ));
    assert!(matches!(
        Collection::decode(one("/abs", "0644").as_bytes()),
        Err(CollectionError::Path { .. })
    ));
    for mode in ["4755", "644", "0648", "x644", "07777"] {
        assert!(
            matches!(
                Collection::decode(one("ok", mode).as_bytes()),
                Err(CollectionError::Mode { .. })
            ),
            "{mode}"
        );
    }
    // Another spelling of the same list: spaces, key order, unsorted entries.
    let spaced = one("ok", "0644").replace(",\"size\"", ", \"size\"");
    assert_eq!(
        Collection::decode(spaced.as_bytes()),
        Err(CollectionError::NotCanonical)
    );
    let a = entry("a", 1, 0o644, b"x");
    let b = entry("b", 1, 0o644, b"x");
    let sorted = String::from_utf8(Collection::new(vec![a, b]).unwrap().encode()).unwrap();
    let (head, rest) = sorted.split_once("[").unwrap();
    let (first, second) = rest.trim_end_matches("]}").split_once("},").unwrap();
    let unsorted = format!("{head}[{second},{first}}}]}}");
    assert_eq!(
        Collection::decode(unsorted.as_bytes()),
        Err(CollectionError::NotCanonical)
    );
    // Duplicates, a file that is also a directory, unknown keys and versions.
    let dup = sorted.replace("\"path\":\"b\"", "\"path\":\"a\"");
    assert!(matches!(
        Collection::decode(dup.as_bytes()),
        Err(CollectionError::Duplicate(_))
    ));
    let nested = Collection::new(vec![
        entry("a", 1, 0o644, b"x"),
        entry("a/b", 1, 0o644, b"x"),
    ]);
    assert!(matches!(nested, Err(CollectionError::FileIsDirectory(p)) if p == "a"));
    let extra = one("ok", "0644").replace("\"size\"", "\"owner\":0,\"size\"");
    assert!(matches!(
        Collection::decode(extra.as_bytes()),
        Err(CollectionError::Syntax(_))
    ));
    let v2 = one("ok", "0644").replace("\"version\":1", "\"version\":2");
    assert!(matches!(
        Collection::decode(v2.as_bytes()),
        Err(CollectionError::Unsupported { version: 2, .. })
    ));
    // Bounded before parsing.
    let huge = vec![b' '; MAX_COLLECTION_LEN + 1];
    assert_eq!(
        Collection::decode(&huge),
        Err(CollectionError::TooLong(MAX_COLLECTION_LEN + 1))
    );
}

fn arb_component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

fn arb_entry() -> impl Strategy<Value = CollectionEntry> {
    (
        prop::collection::vec(arb_component(), 1..4),
        any::<u64>(),
        0u32..=0o777,
        any::<[u8; 4]>(),
    )
        .prop_map(|(components, size, mode, seed)| CollectionEntry {
            path: components.join("/"),
            size,
            mode,
            digest: Digest::sha256_of(&seed),
        })
}

proptest! {
    /// Whatever valid list goes in comes back out, and the encoding does not depend on
    /// the order entries were given in.
    #[test]
    fn round_trips_and_is_order_independent(
        entries in prop::collection::vec(arb_entry(), 0..20),
    ) {
        let Ok(collection) = Collection::new(entries.clone()) else {
            // Duplicates or file/directory clashes: refused in any order.
            let mut reversed = entries;
            reversed.reverse();
            prop_assert!(Collection::new(reversed).is_err());
            return Ok(());
        };
        let encoded = collection.encode();
        prop_assert_eq!(Collection::decode(&encoded).unwrap(), collection.clone());
        let mut reversed = entries;
        reversed.reverse();
        prop_assert_eq!(Collection::new(reversed).unwrap().encode(), encoded);
    }

    /// Arbitrary bytes never panic the decoder, and anything it accepts has only safe
    /// paths and re-encodes to the same bytes.
    #[test]
    fn decoding_arbitrary_bytes_is_safe(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(collection) = Collection::decode(&bytes) {
            prop_assert_eq!(collection.encode(), bytes);
            for entry in collection.entries() {
                prop_assert!(validate_path(&entry.path).is_ok());
            }
        }
    }

    /// Any path with a `..` component, absolute or with an empty component is refused.
    #[test]
    fn traversal_is_refused(
        components in prop::collection::vec(arb_component(), 0..4),
        at in 0usize..5,
        bad in prop::sample::select(vec!["..", ".", ""]),
        absolute in any::<bool>(),
    ) {
        let mut components = components;
        let at = at.min(components.len());
        components.insert(at, bad.to_owned());
        let mut path = components.join("/");
        if absolute {
            path.insert(0, '/');
        }
        prop_assert!(validate_path(&path).is_err(), "{:?} accepted", path);
    }
}
