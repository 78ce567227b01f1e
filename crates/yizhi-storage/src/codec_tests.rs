use super::*;

fn entry(index: LogIndex, term: Term, payload: EntryPayload) -> Record {
    Record::Entry(Entry { index, term, payload })
}

fn samples() -> Vec<Record> {
    let membership = Membership {
        voters: [1, 2, 3].into(),
        voters_outgoing: [3, 4].into(),
        learners: [9].into(),
    };
    vec![
        entry(1, 1, EntryPayload::Noop),
        entry(2, 7, EntryPayload::Normal(Bytes::from_static(b"hello"))),
        entry(3, 7, EntryPayload::Normal(Bytes::new())),
        entry(u64::MAX, u64::MAX, EntryPayload::Membership(membership)),
        entry(4, 8, EntryPayload::Membership(Membership::default())),
        Record::HardState(HardState {
            term: 5,
            vote: Some(2),
            commit: 40,
        }),
        Record::HardState(HardState::default()),
        Record::SnapshotMarker(SnapshotMarker {
            index: 10,
            term: 3,
            discard_suffix: true,
        }),
    ]
}

fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(record, &mut out);
    out
}

#[test]
fn every_record_kind_round_trips() {
    let mut stream = Vec::new();
    for record in samples() {
        let bytes = encode(&record);
        assert_eq!(bytes.len(), encoded_len(&record));
        let decoded = decode_record(&bytes).expect("valid record");
        assert_eq!(decoded.record, record);
        assert_eq!(decoded.frame_len, bytes.len());
        stream.extend_from_slice(&bytes);
    }
    // Records decode back to back from one buffer, then the zero tail reads as the end.
    stream.extend_from_slice(&[0u8; 64]);
    let mut offset = 0;
    for record in samples() {
        let decoded = decode_record(&stream[offset..]).expect("valid record");
        assert_eq!(decoded.record, record);
        offset += decoded.frame_len;
    }
    assert_eq!(decode_record(&stream[offset..]), Err(DecodeError::EndOfRecords));
}

#[test]
fn every_truncation_of_a_record_is_reported_not_misread() {
    for record in samples() {
        let bytes = encode(&record);
        for cut in 0..bytes.len() {
            let result = decode_record(&bytes[..cut]);
            assert!(
                matches!(result, Err(DecodeError::Truncated { .. })),
                "cut at {cut} of {record:?}: {result:?}"
            );
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    for record in samples() {
        let bytes = encode(&record);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let result = decode_record(&flipped);
            assert!(result.is_err(), "flip of bit {bit} in {record:?} went unnoticed");
        }
    }
}

/// Frames a body with a correct checksum, to reach the checks behind the CRC.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(kind, body).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn entry_body(index: u64, kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&index.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.push(kind);
    body.extend_from_slice(rest);
    body
}

fn membership_bytes(sets: [&[u64]; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    for set in sets {
        out.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for id in set {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out
}

#[test]
fn malformed_bodies_name_what_is_wrong() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (frame(99, &[1]), DecodeError::UnknownType(99)),
        (
            frame(TYPE_HARD_STATE, &[0; 23]),
            DecodeError::BodyLength {
                what: "hard state",
                expected: 24,
                actual: 23,
            },
        ),
        (
            frame(TYPE_SNAPSHOT_MARKER, &[0; 18]),
            DecodeError::BodyLength {
                what: "snapshot marker",
                expected: 17,
                actual: 18,
            },
        ),
        (
            frame(TYPE_SNAPSHOT_MARKER, &[[0; 16].as_slice(), &[2]].concat()),
            DecodeError::BadFlag(2),
        ),
        (
            frame(TYPE_ENTRY, &[0; 16]),
            DecodeError::BodyLength {
                what: "entry",
                expected: 17,
                actual: 16,
            },
        ),
        (
            frame(TYPE_ENTRY, &entry_body(0, PAYLOAD_NOOP, &[])),
            DecodeError::ZeroIndex,
        ),
        (
            frame(TYPE_ENTRY, &entry_body(1, 7, &[])),
            DecodeError::UnknownPayloadKind(7),
        ),
        (
            frame(TYPE_ENTRY, &entry_body(1, PAYLOAD_NOOP, &[1])),
            DecodeError::BodyLength {
                what: "noop entry payload",
                expected: 0,
                actual: 1,
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_record(&bytes), Err(expected));
    }
}

#[test]
fn malformed_memberships_are_refused() {
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (
            membership_bytes([&[1, 2], &[], &[]])[..12].to_vec(),
            "node ids are truncated",
        ),
        (vec![0, 0], "set count is truncated"),
        (membership_bytes([&[2, 1], &[], &[]]), "not strictly ascending"),
        (membership_bytes([&[1, 1], &[], &[]]), "not strictly ascending"),
        (membership_bytes([&[0], &[], &[]]), "not strictly ascending"),
        (membership_bytes([&[1], &[], &[1]]), "both learner and voter"),
        (membership_bytes([&[1], &[2], &[2]]), "both learner and voter"),
        (
            (MAX_MEMBERSHIP_NODES as u32 + 1).to_le_bytes().to_vec(),
            "exceeds MAX_MEMBERSHIP_NODES",
        ),
    ];
    for (payload, reason) in bad {
        let bytes = frame(TYPE_ENTRY, &entry_body(1, PAYLOAD_MEMBERSHIP, &payload));
        match decode_record(&bytes) {
            Err(DecodeError::BadMembership(message)) => {
                assert!(message.contains(reason), "{message} lacks {reason}")
            }
            other => panic!("expected BadMembership({reason}), got {other:?}"),
        }
    }
    let mut trailing = membership_bytes([&[1], &[], &[]]);
    trailing.push(0);
    let bytes = frame(TYPE_ENTRY, &entry_body(1, PAYLOAD_MEMBERSHIP, &trailing));
    assert!(matches!(
        decode_record(&bytes),
        Err(DecodeError::BodyLength { .. })
    ));
}

#[test]
fn frame_lengths_outside_the_limit_are_refused() {
    let mut huge = vec![0u8; FRAME_HEADER_BYTES];
    huge[0..4].copy_from_slice(&(MAX_RECORD_BODY_BYTES as u32 + 1).to_le_bytes());
    huge[8] = TYPE_ENTRY;
    assert_eq!(
        decode_record(&huge),
        Err(DecodeError::BadLength {
            len: MAX_RECORD_BODY_BYTES + 1
        })
    );
    let mut empty = vec![0u8; FRAME_HEADER_BYTES];
    empty[8] = TYPE_ENTRY;
    assert_eq!(decode_record(&empty), Err(DecodeError::BadLength { len: 0 }));
}

#[test]
fn decoder_never_panics_on_arbitrary_bytes() {
    let mut rng = yizhi_engine::SeededRng::new(7);
    let valid: Vec<Vec<u8>> = samples().iter().map(encode).collect();
    for _ in 0..20_000 {
        let mut bytes = valid[rng.below(valid.len() as u64) as usize].clone();
        for _ in 0..rng.range_inclusive(1, 4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        let cut = rng.range_inclusive(0, bytes.len() as u64) as usize;
        let _ = decode_record(&bytes[..cut]);
        let _ = decode_segment_header(&bytes[..cut]);
    }
}

#[test]
fn segment_header_round_trips_and_rejects_damage() {
    let header = encode_segment_header(42);
    assert_eq!(decode_segment_header(&header), Ok(42));
    let mut bad_magic = header;
    bad_magic[0] = b'X';
    assert!(matches!(
        decode_segment_header(&bad_magic),
        Err(DecodeError::BadMagic(_))
    ));
    let mut bad_crc = header;
    bad_crc[17] ^= 1;
    assert!(matches!(
        decode_segment_header(&bad_crc),
        Err(DecodeError::CrcMismatch { .. })
    ));
    let mut bad_version = header;
    bad_version[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bad_version[0..24]);
    bad_version[24..28].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_segment_header(&bad_version),
        Err(DecodeError::BadVersion(1))
    );
    assert!(matches!(
        decode_segment_header(&header[..31]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn batch_headers_round_trip_and_are_not_records() {
    let records = samples();
    let header = BatchHeader::for_records(&records).expect("several records make a batch");
    assert_eq!(header.records as usize, records.len());
    assert_eq!(
        header.bytes,
        records.iter().map(|r| encode(r).len() as u64).sum::<u64>()
    );
    let mut bytes = Vec::new();
    encode_batch_header(header, &mut bytes);
    assert_eq!(bytes.len(), BATCH_HEADER_FRAME_BYTES);
    let decoded = decode_frame(&bytes).expect("decodes");
    assert_eq!(decoded.frame, Frame::BatchHeader(header));
    assert_eq!(decoded.frame_len, BATCH_HEADER_FRAME_BYTES);
    assert_eq!(decode_record(&bytes), Err(DecodeError::UnexpectedBatchHeader));
    // Records decode the same through either function.
    for record in &records {
        let framed = encode(record);
        assert_eq!(
            decode_frame(&framed).expect("decodes").frame,
            Frame::Record(record.clone())
        );
    }
    assert_eq!(
        BatchHeader::for_records(&records[..1]),
        None,
        "a single record goes unwrapped"
    );
    assert_eq!(BatchHeader::for_records(&[]), None);
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            decode_frame(&flipped).is_err(),
            "bit {bit} flipped went unnoticed"
        );
    }
}

#[test]
fn batch_headers_the_encoder_could_not_write_are_refused() {
    let header_frame = |records: u32, bytes: u64| {
        let mut body = records.to_le_bytes().to_vec();
        body.extend_from_slice(&bytes.to_le_bytes());
        frame(TYPE_BATCH_HEADER, &body)
    };
    let min = MIN_RECORD_FRAME_BYTES as u64;
    for (records, bytes) in [
        (0, 0),
        (1, 100),
        (3, 3 * min - 1),
        (2, 2 * MAX_RECORD_BYTES as u64 + 1),
        (u32::MAX, MAX_BATCH_BYTES + 1),
    ] {
        assert!(
            matches!(
                decode_frame(&header_frame(records, bytes)),
                Err(DecodeError::BadBatchHeader(_))
            ),
            "{records} records of {bytes} bytes"
        );
    }
    assert!(decode_frame(&header_frame(3, 3 * min)).is_ok());
    let short = frame(TYPE_BATCH_HEADER, &[1, 2, 3]);
    assert!(matches!(
        decode_frame(&short),
        Err(DecodeError::BodyLength { .. })
    ));
}
