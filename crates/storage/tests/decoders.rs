//! The decoders that read bytes from disk or the bus, fed arbitrary bytes: a log record's
//! payload (also the NATS message body) and a whole segment file. Any input gives a value or
//! an error, never a panic; a segment whose records all decode replays them all, and a
//! damaged record with whole records after it is refused, never cut off as a torn tail.

use cascade_core::{Event, EventKind, Mutation, Target};
use cascade_storage::{EventLog, LogOptions, decode_mutation, encode_mutation};
use proptest::prelude::*;

fn event(i: u32) -> Mutation {
    Mutation::Events(vec![Event {
        kind: EventKind::Click,
        user_id: format!("u{i}"),
        target: Target::Item(format!("i{i}")),
        value: 1.0,
        fraction: None,
        ts: 1_700_000_000_000 + i64::from(i),
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }])
}

fn encoded(i: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_mutation(&event(i), &mut out).expect("encode");
    out
}

/// A payload: a real record, the same with bytes overwritten, noise, or a known record kind
/// before noise (where each kind's decoder starts reading).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u32>().prop_map(encoded),
        (
            any::<u32>(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        )
            .prop_map(|(i, edits)| {
                let mut out = encoded(i);
                for (at, b) in edits {
                    let n = out.len();
                    out[at % n] = b;
                }
                out
            }),
        // Never empty: every record starts with its kind byte (a zero length is a torn tail).
        proptest::collection::vec(any::<u8>(), 1..512),
        (0u8..16, proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(k, mut b)| {
            b.insert(0, k);
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_payload_decodes_or_errs(p in payload()) {
        let _ = decode_mutation(&p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_segment_replays_or_is_refused(
        payloads in proptest::collection::vec(payload(), 1..12),
        tail in proptest::collection::vec(any::<u8>(), 0..24),
        bad_crc in proptest::option::of(any::<usize>()),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let bad = bad_crc.map(|b| b % payloads.len());
        let mut file = b"CSCLOG01".to_vec();
        for (k, p) in payloads.iter().enumerate() {
            file.extend((p.len() as u32).to_le_bytes());
            let mut crc = crc32fast::hash(p);
            if bad == Some(k) {
                crc ^= 1;
            }
            file.extend(crc.to_le_bytes());
            file.extend(p);
        }
        file.extend(&tail);
        std::fs::write(dir.path().join(format!("{:08}.seg", 0)), &file).expect("write");
        let mut applied = 0u64;
        let opened = EventLog::open(LogOptions::new(dir.path()), &mut |_| applied += 1);
        let readable = payloads.iter().all(|p| decode_mutation(p).is_ok());
        match opened {
            Ok((_, stats)) => {
                prop_assert_eq!(applied, stats.records);
                match bad {
                    // Only the last record may be cut off as torn.
                    Some(k) => prop_assert_eq!(k + 1, payloads.len(), "a damaged record before whole ones was cut off"),
                    // A record this version cannot read is never skipped.
                    None => prop_assert!(readable && stats.records == payloads.len() as u64),
                }
            }
            Err(_) => prop_assert!(!readable || bad.is_some() || !tail.is_empty()),
        }
    }
}
