//! The fork server's packets, over a real `SOCK_SEQPACKET` pair, with
//! descriptors passed by SCM_RIGHTS.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use fibpool_protocol::forkserver::*;

#[test]
fn every_message_round_trips() {
    for request in [
        ToServer::Start { socket: None },
        ToServer::Start {
            socket: Some(b"fibpool-123-4".to_vec()),
        },
        ToServer::Start {
            socket: Some(vec![b'x'; MAX_SOCKET_NAME]),
        },
    ] {
        assert_eq!(ToServer::decode(&request.encode()).unwrap(), request);
    }
    for message in [
        FromServer::Ready {
            ready_ns: u64::MAX - 7,
        },
        FromServer::Ready { ready_ns: 0 },
        FromServer::Started { pid: 42 },
        FromServer::Failed { errno: 11 },
        FromServer::Exited {
            pid: u32::MAX,
            status: 9,
        },
        FromServer::Exited {
            pid: 7,
            status: 3 << 8,
        },
    ] {
        assert_eq!(FromServer::decode(&message.encode()).unwrap(), message);
    }
}

#[test]
fn malformed_packets_are_refused_as_invalid_data() {
    let long = ToServer::Start {
        socket: Some(vec![b'x'; MAX_SOCKET_NAME + 1]),
    }
    .encode();
    let mut wrong_length = ToServer::Start {
        socket: Some(b"abc".to_vec()),
    }
    .encode();
    wrong_length[4] = 9;
    for packet in [
        &[][..],
        &[1, 0, 0, 0],
        &[2, 0, 0, 0, 0, 0, 0, 0],
        &long,
        &wrong_length,
    ] {
        let err = ToServer::decode(packet).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{packet:?}: {err}");
    }
    let started_pid_0 = {
        let mut p = FromServer::Started { pid: 1 }.encode();
        p[4] = 0;
        p
    };
    let unknown = {
        let mut p = FromServer::Started { pid: 1 }.encode();
        p[0] = 9;
        p
    };
    for packet in [&[][..], &[0u8; 11], &[0u8; 13], &started_pid_0, &unknown] {
        let err = FromServer::decode(packet).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{packet:?}: {err}");
    }
}

#[test]
fn descriptors_travel_with_their_packet_and_work_on_the_far_side() {
    let (a, b) = socket_pair().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let request = ToServer::Start { socket: None }.encode();
    send(a.as_fd(), &request, &[writer.as_fd(), reader.as_fd()]).unwrap();
    drop(writer);
    let mut buf = [0u8; MAX_PACKET];
    let (len, fds) = recv(b.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..len], &request[..]);
    assert_eq!(fds.len(), 2);
    // A new descriptor for the same pipe, close-on-exec.
    assert_ne!(fds[0].as_raw_fd(), reader.as_raw_fd());
    // SAFETY: fcntl(F_GETFD) on a descriptor we own.
    let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    let mut far_writer = std::fs::File::from(fds.into_iter().next().unwrap());
    far_writer.write_all(b"through").unwrap();
    drop(far_writer);
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through");
    // The end of the stream, once the other side is closed.
    drop(a);
    assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
}

#[test]
fn a_packet_too_big_for_the_buffer_is_refused_not_cut() {
    let (a, b) = socket_pair().unwrap();
    send(a.as_fd(), &[7u8; 64], &[]).unwrap();
    let mut small = [0u8; 12];
    let err = recv(b.as_fd(), &mut small).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "a fork server packet cut short (12 bytes, 0 descriptors)"
    );
}
