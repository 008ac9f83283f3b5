//! Arbitrary bytes into both decoders: the worker's (requests) and the
//! coordinator's (responses), in memory and as streams, handshake first as
//! each side reads them, and as raw stress frames. Nothing may panic, and
//! nothing may allocate more than the frame cap.
#![no_main]

use fibpool_protocol::{FrameReader, Request, Response, decode_frame, raw};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<Request>(data);
    let _ = decode_frame::<Response>(data);

    let mut worker_side = FrameReader::new(data);
    if let Ok(Some(_)) = worker_side.recv_handshake::<Request>() {
        while let Ok(Some(request)) = worker_side.recv::<Request>() {
            let _ = request.into_owned();
        }
    }

    let mut coordinator_side = FrameReader::new(data);
    if let Ok(Some(_)) = coordinator_side.recv_handshake::<Response>() {
        while let Ok(Some(response)) = coordinator_side.recv::<Response>() {
            if let Response::Computed(result) = &response {
                // A decoded table is well-formed: every value is in its block.
                let total: usize = result.values.iter().map(<[u8]>::len).sum();
                assert_eq!(total, result.values.data().len());
            }
            let _ = response.into_owned();
        }
    }

    let mut raw_frames = FrameReader::new(data);
    while let Ok(Some(frame)) = raw_frames.recv_payload() {
        let _ = raw::split(frame);
    }
});
