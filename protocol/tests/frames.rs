//! One small test per edge of the framing, and properties over arbitrary bytes.

use fibpool_protocol::frame::check;
use fibpool_protocol::*;
use proptest::prelude::*;

fn every_message() -> (Vec<Request<'static>>, Vec<Response<'static>>) {
    let requests = vec![
        Request::Hello(CoordinatorHello {
            version: PROTOCOL_VERSION,
            pid: 1,
        }),
        Request::Compute(Chunk {
            id: 7,
            encoding: Encoding::Decimal,
            runs: vec![
                Run { start: 0, len: 3 },
                Run {
                    start: u64::MAX,
                    len: 1,
                },
            ],
        }),
        Request::Compute(Chunk {
            id: 0,
            encoding: Encoding::Raw,
            runs: vec![],
        }),
        Request::Shutdown,
        Request::Echo(Echo {
            seq: 99,
            checksum: checksum(b"payload"),
            reply: Reply::Ack,
            payload: Bytes::borrowed(b"payload"),
        }),
        Request::RawEcho(Reply::Payload),
        Request::Measure(Chunk {
            id: 3,
            encoding: Encoding::Raw,
            runs: vec![Run {
                start: 0,
                len: 50_000,
            }],
        }),
    ];
    let responses = vec![
        Response::Ready(WorkerHello {
            version: PROTOCOL_VERSION,
            pid: 4242,
            main_entered_ns: 1,
            ready_ns: u64::MAX,
        }),
        Response::Computed(ChunkResult {
            id: 7,
            busy_ns: 12345,
            values: [&b""[..], b"354224848179261915075", &[0xff; 70_000]]
                .into_iter()
                .collect(),
        }),
        Response::Failed(Failure {
            chunk: Some(3),
            message: "index 400000000 exceeds the largest index — ünïcode".into(),
        }),
        Response::Failed(Failure {
            chunk: None,
            message: String::new(),
        }),
        Response::Echo(EchoReply {
            seq: u64::MAX,
            intact: false,
            payload: Bytes::from(vec![1; 300]),
        }),
        Response::Measured(Measured {
            id: 3,
            busy_ns: 24_000_000,
            values: 50_000,
            bytes: 108_000_000,
        }),
        Response::Part(ChunkPart {
            id: 8,
            values: [&[7u8; PART_BYTES][..], b"12"].into_iter().collect(),
        }),
    ];
    (requests, responses)
}

#[test]
fn every_message_round_trips_through_a_stream() {
    let (requests, responses) = every_message();
    let mut wire = Vec::new();
    let mut writer = FrameWriter::new(&mut wire);
    for r in &requests {
        writer.send(r).unwrap();
    }
    for r in &responses {
        writer.send(r).unwrap();
    }
    drop(writer);

    let mut reader = FrameReader::new(&wire[..]);
    for r in &requests {
        assert_eq!(reader.recv::<Request>().unwrap().as_ref(), Some(r));
    }
    for r in &responses {
        assert_eq!(reader.recv::<Response>().unwrap().as_ref(), Some(r));
    }
    // EOF exactly at a frame boundary is a clean end.
    assert!(reader.recv::<Request>().unwrap().is_none());
}

#[test]
fn every_message_round_trips_in_memory() {
    let (requests, responses) = every_message();
    for r in &requests {
        let frame = encode_frame(r).unwrap();
        assert_eq!(
            decode_frame::<Request>(&frame).unwrap(),
            Some((r.clone(), frame.len()))
        );
    }
    for r in &responses {
        let frame = encode_frame(r).unwrap();
        assert_eq!(
            decode_frame::<Response>(&frame).unwrap(),
            Some((r.clone(), frame.len()))
        );
    }
}

#[test]
fn byte_strings_travel_as_one_block() {
    // 70 000 bytes of 0xff cost 70 000 bytes plus a short length, not one varint each.
    let msg = Response::Computed(ChunkResult {
        id: 1,
        busy_ns: 1,
        values: [&[0xff; 70_000][..]].into_iter().collect(),
    });
    let frame = encode_frame(&msg).unwrap();
    assert!(frame.len() < 70_000 + 20, "{}", frame.len());
    // 1000 values cost their bytes and a 4-byte end each, and nothing else.
    let values = vec![vec![7u8; 10]; 1000];
    let msg = Response::Computed(ChunkResult {
        id: 1,
        busy_ns: 1,
        values: values.iter().map(Vec::as_slice).collect(),
    });
    let frame = encode_frame(&msg).unwrap();
    assert!(frame.len() < 1000 * (10 + 4) + 20, "{}", frame.len());
}

#[test]
fn a_result_whose_ends_do_not_fit_its_values_is_undecodable() {
    // Computed { id 1, busy 0, ends [3, 1], data "abc" }: value 1 ends before value 0.
    let mut payload = vec![1u8, 1, 0, 8];
    payload.extend_from_slice(&3u32.to_le_bytes());
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&[3, b'a', b'b', b'c']);
    let frame = [&(payload.len() as u32).to_le_bytes()[..], &payload].concat();
    match decode_frame::<Response>(&frame) {
        Err(Error::Undecodable { reason }) => assert_eq!(
            reason, "value 1 ends at byte 1, before value 0 does (3)",
            "{reason}"
        ),
        other => panic!("expected Undecodable, got {other:?}"),
    }
}

#[test]
fn header_layout_is_u32_little_endian() {
    let frame = encode_frame(&Request::Shutdown).unwrap();
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN);
}

#[test]
fn incomplete_head_and_body_are_incomplete_in_memory() {
    let frame = encode_frame(&Request::Shutdown).unwrap();
    for cut in 0..frame.len() {
        assert_eq!(
            check(&frame[..cut], MAX_FRAME_LEN).unwrap(),
            None,
            "cut at {cut}"
        );
        assert!(decode_frame::<Request>(&frame[..cut]).unwrap().is_none());
    }
    assert_eq!(check(&frame, MAX_FRAME_LEN).unwrap(), Some(frame.len()));
}

#[test]
fn truncated_header_on_a_stream() {
    let mut reader = FrameReader::new(&[5u8, 0, 0][..]);
    match reader.recv::<Request>() {
        Err(Error::Truncated {
            part: FramePart::Header,
            expected: 4,
            got: 3,
        }) => {}
        other => panic!("expected a truncated header, got {other:?}"),
    }
}

#[test]
fn truncated_payload_on_a_stream() {
    let frame = encode_frame(&Request::Hello(CoordinatorHello { version: 1, pid: 1 })).unwrap();
    let cut = &frame[..frame.len() - 1];
    let err = FrameReader::new(cut).recv::<Request>().unwrap_err();
    let payload = frame.len() - HEADER_LEN;
    assert!(
        matches!(err, Error::Truncated { part: FramePart::Payload, expected, got } if expected == payload && got == payload - 1),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "stream ended inside a frame payload: got {} of {payload} bytes",
            payload - 1
        )
    );
    assert!(err.is_disconnect());
}

#[test]
fn frame_at_the_cap_is_read_and_one_byte_over_is_refused() {
    let max = 1000;
    let payload = vec![7u8; max];
    let mut wire = Vec::new();
    FrameWriter::with_max_len(&mut wire, max)
        .send_payload(&payload)
        .unwrap();
    let mut reader = FrameReader::with_max_len(&wire[..], max);
    assert_eq!(reader.recv_payload().unwrap(), Some(&payload[..]));

    let over = vec![7u8; max + 1];
    let mut wire = Vec::new();
    let err = FrameWriter::with_max_len(&mut wire, max)
        .send_payload(&over)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{err:?}"
    );
    assert!(wire.is_empty(), "nothing is written for a refused frame");

    let mut wire = 1001u32.to_le_bytes().to_vec();
    wire.extend_from_slice(&over);
    let err = FrameReader::with_max_len(&wire[..], max)
        .recv_payload()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn encoder_refuses_a_message_over_the_cap() {
    let msg = Response::Computed(ChunkResult {
        id: 1,
        busy_ns: 0,
        values: [&[0; 2000][..]].into_iter().collect(),
    });
    let mut wire = Vec::new();
    let err = FrameWriter::with_max_len(&mut wire, 1000)
        .send(&msg)
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { max: 1000, .. }), "{err:?}");
    assert!(wire.is_empty());
}

#[test]
fn huge_announced_length_is_refused_before_allocating() {
    let wire = u32::MAX.to_le_bytes();
    let err = FrameReader::new(&wire[..]).recv_payload().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "frame of 4294967295 bytes exceeds the maximum frame length of {MAX_FRAME_LEN} bytes"
        )
    );
    assert!(matches!(
        check(&wire, MAX_FRAME_LEN),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn garbage_payloads_are_undecodable() {
    let cases: &[(&[u8], &str)] = &[
        (&[9], "expected variant index 0 <= i < 6"), // no Request variant 9
        (&[1, 0], "ends"),                           // Compute with a truncated chunk
        (&[6, 0, 0], "expected variant index"),
        (&[2, 0], "1 trailing bytes"), // Shutdown then junk
        (&[], "ends"),
    ];
    for (payload, reason) in cases {
        let mut wire = (payload.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(payload);
        match FrameReader::new(&wire[..]).recv::<Request>() {
            Err(Error::Undecodable { reason: got }) => {
                assert!(got.contains(reason), "payload {payload:?}: {got}")
            }
            other => panic!("payload {payload:?}: expected undecodable, got {other:?}"),
        }
    }
}

#[test]
fn a_byte_string_longer_than_its_frame_is_refused_without_allocating_it() {
    // Computed { id 1, busy 0, an ends table claiming 2^32 bytes }: the
    // length exceeds the payload, and the decoder must not reserve it.
    let mut payload = vec![1u8, 1, 0, 252];
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let frame = [&(payload.len() as u32).to_le_bytes()[..], &payload].concat();
    let err = decode_frame::<Response>(&frame).unwrap_err();
    assert!(matches!(err, Error::Undecodable { .. }), "{err:?}");
}

#[test]
fn handshake_of_another_version_is_a_version_error() {
    // A future Hello with a different layout after the version still reads as a version.
    let payload = [0u8, 7, 1, 2, 3];
    let frame = [&(payload.len() as u32).to_le_bytes()[..], &payload].concat();
    let err = FrameReader::new(&frame[..])
        .recv_handshake::<Request>()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 7
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "protocol version mismatch: peer speaks version 7, this side speaks {PROTOCOL_VERSION}"
        )
    );
    // The same version decodes normally.
    let hello = Request::Hello(CoordinatorHello {
        version: PROTOCOL_VERSION,
        pid: 1,
    });
    let frame = encode_frame(&hello).unwrap();
    assert_eq!(
        FrameReader::new(&frame[..])
            .recv_handshake::<Request>()
            .unwrap(),
        Some(hello)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_either_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame::<Request>(&bytes);
        let _ = decode_frame::<Response>(&bytes);
        let mut reader = FrameReader::new(&bytes[..]);
        while let Ok(Some(_)) = reader.recv::<Request>() {}
        let mut reader = FrameReader::new(&bytes[..]);
        while let Ok(Some(_)) = reader.recv_handshake::<Response>() {}
    }

    #[test]
    fn arbitrary_payloads_in_a_valid_frame_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let frame = [&(payload.len() as u32).to_le_bytes()[..], &payload].concat();
        let _ = decode_frame::<Request>(&frame);
        let _ = decode_frame::<Response>(&frame);
    }

    #[test]
    fn chunks_round_trip(id in any::<u64>(), runs in prop::collection::vec((any::<u64>(), any::<u64>()), 0..50)) {
        let msg = Request::Compute(Chunk {
            id,
            encoding: Encoding::Hex,
            runs: runs.into_iter().map(|(start, len)| Run { start, len }).collect(),
        });
        let frame = encode_frame(&msg).unwrap();
        prop_assert_eq!(decode_frame::<Request>(&frame).unwrap(), Some((msg, frame.len())));
    }

    #[test]
    fn results_round_trip(id in any::<u64>(), values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let msg = Response::Computed(ChunkResult { id, busy_ns: id / 3, values: values.iter().map(Vec::as_slice).collect() });
        let frame = encode_frame(&msg).unwrap();
        prop_assert_eq!(decode_frame::<Response>(&frame).unwrap(), Some((msg, frame.len())));
    }
}

#[test]
fn variant_indices_are_frozen() {
    // bincode encodes variants by index: appending is fine, reordering is not.
    let first_byte = |r: &Request| encode_frame(r).unwrap()[HEADER_LEN];
    assert_eq!(
        first_byte(&Request::Hello(CoordinatorHello { version: 1, pid: 1 })),
        0
    );
    assert_eq!(first_byte(&Request::Shutdown), 2);
    assert_eq!(first_byte(&Request::RawEcho(Reply::Ack)), 4);
    let ready = Response::Ready(WorkerHello {
        version: 1,
        pid: 1,
        main_entered_ns: 0,
        ready_ns: 0,
    });
    assert_eq!(encode_frame(&ready).unwrap()[HEADER_LEN], 0);
}

#[test]
fn raw_frames_split_and_join() {
    let head = raw::header(7, raw::CORRUPTED);
    let frame = [&head[..], b"data"].concat();
    assert_eq!(raw::split(&frame), Some((7, raw::CORRUPTED, &b"data"[..])));
    assert_eq!(raw::split(&frame[..15]), None);
    let mut wire = Vec::new();
    FrameWriter::new(&mut wire)
        .send_parts(&[&head[..], b"da", b"ta"])
        .unwrap();
    assert_eq!(
        FrameReader::new(&wire[..]).recv_payload().unwrap(),
        Some(&frame[..])
    );
}

#[test]
fn decoded_byte_strings_borrow_from_the_frame() {
    let payload = vec![0x5a; 4096];
    let frame = encode_frame(&Response::Echo(EchoReply {
        seq: 1,
        intact: true,
        payload: Bytes::borrowed(&payload),
    }))
    .unwrap();
    let mut reader = FrameReader::new(&frame[..]);
    match reader.recv::<Response>().unwrap() {
        Some(Response::Echo(reply)) => {
            assert!(
                matches!(reply.payload.0, std::borrow::Cow::Borrowed(_)),
                "copied"
            );
            assert_eq!(reply.payload.as_slice(), &payload[..]);
            let owned = Response::Echo(reply).into_owned();
            assert!(matches!(
                owned,
                Response::Echo(EchoReply {
                    payload: Bytes(std::borrow::Cow::Owned(_)),
                    ..
                })
            ));
        }
        other => panic!("expected an echo, got {other:?}"),
    }
}

#[test]
fn an_echo_sent_in_parts_is_the_echo_encoded_whole() {
    // Lengths around each step of the varint encoding of the payload's length.
    for len in [0usize, 1, 15, 250, 251, 252, 65_535, 65_536, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let (seq, sum) = (u64::MAX - len as u64, checksum(&payload));
        for reply in [Reply::Payload, Reply::Ack] {
            let whole = encode_frame(&Request::Echo(Echo {
                seq,
                checksum: sum,
                reply,
                payload: Bytes::borrowed(&payload),
            }))
            .unwrap();
            let header = Echo::header(seq, sum, reply, len).unwrap();
            let cut = len / 3;
            let mut wire = Vec::new();
            FrameWriter::new(&mut wire)
                .send_parts(&[&header, &payload[..cut], &payload[cut..]])
                .unwrap();
            assert_eq!(wire, whole, "payload of {len} bytes, {reply:?}");
        }
    }
}

#[test]
fn the_checksum_of_parts_is_the_checksum_of_the_whole() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    for cut in [0, 1, 16, 240, 241, 5000, 10_000] {
        let (a, b) = data.split_at(cut);
        assert_eq!(checksum_parts(&[a, b]), checksum(&data), "cut at {cut}");
    }
    assert_eq!(checksum_parts(&[]), checksum(&[]));
    assert_ne!(checksum(&data[1..]), checksum(&data));
}

#[test]
fn a_swapped_in_buffer_is_read_into_and_kept() {
    let mut wire = Vec::new();
    let mut writer = FrameWriter::new(&mut wire);
    writer.send_payload(b"first").unwrap();
    writer.send_payload(b"second").unwrap();
    drop(writer);
    let mut reader = FrameReader::new(&wire[..]);
    assert_eq!(reader.recv_payload().unwrap(), Some(&b"first"[..]));
    let mut spare = Vec::with_capacity(4096);
    spare.extend_from_slice(b"stale");
    let old = reader.swap_buffer(spare);
    assert_eq!(old, b"first");
    assert_eq!(reader.recv_payload().unwrap(), Some(&b"second"[..]));
    let back = reader.swap_buffer(Vec::new());
    assert_eq!(back, b"second");
    assert!(back.capacity() >= 4096, "the buffer's capacity was lost");
}

#[test]
fn a_frame_read_over_a_longer_ones_bytes_is_its_own_bytes() {
    // The reader keeps its buffer's bytes between frames and reads over
    // them: a shorter frame after a longer one, a truncated one after
    // both, must each be exactly what was sent.
    let long = vec![0xaa; 300_000];
    let short = vec![0x55; 70_000];
    let mut wire = Vec::new();
    let mut writer = FrameWriter::new(&mut wire);
    writer.send_payload(&long).unwrap();
    writer.send_payload(&short).unwrap();
    writer.send_payload(&long).unwrap();
    drop(writer);
    wire.truncate(wire.len() - 1000);
    let mut reader = FrameReader::new(&wire[..]);
    assert_eq!(reader.recv_payload().unwrap(), Some(&long[..]));
    assert_eq!(reader.recv_payload().unwrap(), Some(&short[..]));
    match reader.recv_payload() {
        Err(Error::Truncated {
            part: FramePart::Payload,
            expected: 300_000,
            got: 299_000,
        }) => {}
        other => panic!("a truncated third frame read as {other:?}"),
    }
    let mut wire = Vec::new();
    FrameWriter::new(&mut wire).send_payload(&short).unwrap();
    let mut reader = FrameReader::new(&wire[..]);
    reader.swap_buffer(vec![0x22; 100_000]);
    assert_eq!(reader.recv_payload().unwrap(), Some(&short[..]));
}

#[test]
fn a_frame_buffer_is_sized_by_class() {
    use fibpool_protocol::frame::size_class;
    assert_eq!(size_class(0), 0);
    assert_eq!(size_class(65_536), 65_536);
    assert_eq!(size_class(1 << 20), 1 << 20);
    assert_eq!(size_class((1 << 20) + 1), 2 << 20);
    assert_eq!(size_class(700_000), 1 << 20);
    for len in [
        65_537usize,
        100_000,
        1_048_700,
        1_100_000,
        3_999_999,
        4 << 20,
    ] {
        let class = size_class(len);
        assert!(class >= len, "{len} got {class}");
        // Less than twice the frame: what a recycled buffer may hold over
        // it.
        assert!(class < 2 * len, "{len} got {class}");
        assert_eq!(size_class(class), class, "a class is its own class");
    }
    // A range's parts, a value or two apart, share a class.
    assert_eq!(size_class(1_048_700), size_class(1_053_000));
}
