//! Our server session against ngrok's own client implementation (the `muxado` crate, as the
//! SDKs use it), and against hostile peers writing raw frames.

use bytes::{Bytes, BytesMut};
use meridian_tunnel::frame::{ErrorCode, FLAG_SYN, Frame};
use meridian_tunnel::proto::{Auth, AuthResp, TYPE_AUTH, TYPE_PROXY};
use meridian_tunnel::{Session, SessionEnd, rpc};
use muxado::SessionBuilder;
use muxado::typed::{StreamType, TypedAccept, TypedOpenClose, TypedSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn pair() -> (
    muxado::typed::Typed<muxado::MuxadoSession>,
    Session,
    meridian_tunnel::Incoming,
) {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let client = muxado::typed::Typed::new(SessionBuilder::new(client_io).client().start());
    let (server, incoming) = Session::server(server_io);
    (client, server, incoming)
}

#[tokio::test]
async fn rpc_round_trip_with_the_sdk_client() {
    let (client, _server, mut incoming) = pair();
    let (mut open, _accept) = client.split_typed();
    let request = tokio::spawn(async move {
        let mut stream = open.open_typed(StreamType::clamp(TYPE_AUTH)).await.unwrap();
        stream
            .write_all(br#"{"Version":["3","2"],"ClientId":"","Extra":{"AuthToken":"t"}}"#)
            .await
            .unwrap();
        // Like the SDK: no FIN, then read to EOF.
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        (open, reply)
    });
    let mut stream = incoming.accept().await.unwrap();
    assert_eq!(stream.id() % 2, 1, "agents open odd ids");
    assert_eq!(stream.read_type().await.unwrap(), TYPE_AUTH);
    let auth: Auth = rpc::read_request(&mut stream).await.unwrap();
    assert_eq!(auth.extra.auth_token, "t");
    let resp = AuthResp {
        version: "3".into(),
        client_id: "c1".into(),
        ..AuthResp::default()
    };
    rpc::respond(&mut stream, &resp).await.unwrap();
    let (_open, reply) = request.await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        (reply["Version"].as_str(), reply["ClientId"].as_str()),
        (Some("3"), Some("c1"))
    );
}

/// A deterministic, non-repeating byte pattern, so a reordered or dropped chunk is caught.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

#[tokio::test]
async fn bulk_data_flows_both_ways_through_the_window() {
    let (client, server, _incoming) = pair();
    let (_open, mut accept) = client.split_typed();
    // The agent echoes everything it gets on proxy streams.
    tokio::spawn(async move {
        while let Ok(mut stream) = accept.accept_typed().await {
            tokio::spawn(async move {
                assert_eq!(stream.typ(), StreamType::clamp(TYPE_PROXY));
                let (mut r, mut w) = tokio::io::split(&mut *stream);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let sent = pattern(5 * 1024 * 1024 + 17, 3);
    let mut stream = server.open(TYPE_PROXY, b"").unwrap();
    assert_eq!(stream.id() % 2, 0, "the edge opens even ids");
    let (mut r, mut w) = tokio::io::split(&mut stream);
    let to_send = sent.clone();
    let writer = async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let reader = r.read_to_end(&mut got);
    let ((), n) = tokio::join!(writer, reader);
    assert_eq!(n.unwrap(), sent.len());
    assert!(got == sent, "echoed bytes differ");
}

#[tokio::test]
async fn chunks_arrive_as_sent_and_keep_granting_the_window() {
    let (client, server, _incoming) = pair();
    let (_open, mut accept) = client.split_typed();
    // Four windows' worth: the agent stalls unless taking chunks grants bytes back.
    let sent = pattern(4 * 256 * 1024 + 5, 9);
    let to_send = sent.clone();
    tokio::spawn(async move {
        let mut stream = accept.accept_typed().await.unwrap();
        stream.write_all(&to_send).await.unwrap();
        stream.shutdown().await.unwrap();
        // Hold the stream until the edge has read it all.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let mut stream = server.open(TYPE_PROXY, b"").unwrap();
    let mut got = Vec::new();
    loop {
        let chunk = std::future::poll_fn(|cx| stream.poll_chunk(cx, 10_000))
            .await
            .unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 10_000, "a chunk of {} bytes", chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes changed or reordered");
    stream.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_streams_at_once() {
    let (client, server, _incoming) = pair();
    let (_open, mut accept) = client.split_typed();
    tokio::spawn(async move {
        while let Ok(mut stream) = accept.accept_typed().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).await.unwrap();
                buf.reverse();
                stream.write_all(&buf).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let body = pattern(1000 + i as usize * 37, i as u8);
            let mut s = server.open(TYPE_PROXY, &body).unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            back.reverse();
            assert!(back == body, "stream {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.stream_count(), 0, "finished streams are forgotten");
}

#[tokio::test]
async fn a_dropped_connection_ends_the_session_and_its_streams() {
    let (client, server, _incoming) = pair();
    let (_open, mut accept) = client.split_typed();
    let agent = tokio::spawn(async move { accept.accept_typed().await.unwrap() });
    let mut stream = server.open(TYPE_PROXY, b"hello").unwrap();
    let held = agent.await.unwrap();
    drop(held);
    drop(_open);
    // Whatever the client does on drop (RST or plain EOF), the stream ends.
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A peer that writes raw frames.
async fn raw_peer() -> (DuplexStream, Session) {
    let (peer, server_io) = tokio::io::duplex(1 << 20);
    let (server, mut incoming) = Session::server(server_io);
    // Accept and hold streams without reading, like a stalled edge handler.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(s) = incoming.accept().await {
            held.push(s);
        }
    });
    (peer, server)
}

fn wire(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

async fn assert_disconnected(mut peer: DuplexStream, server: &Session) -> SessionEnd {
    let end = server.ended().await;
    // The server closed its side: the peer reads a GOAWAY and then EOF.
    let mut rest = Vec::new();
    let _ = peer.read_to_end(&mut rest).await;
    end
}

#[tokio::test]
async fn hostile_peers_are_disconnected_and_others_are_unaffected() {
    // A well-behaved session running alongside the whole time.
    let (good_client, good_server, _good_incoming) = pair();
    let (_o, mut good_accept) = good_client.split_typed();
    tokio::spawn(async move {
        while let Ok(mut s) = good_accept.accept_typed().await {
            tokio::spawn(async move {
                let mut b = Vec::new();
                s.read_to_end(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });

    let garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let oversized: &[u8] = &[0xFF, 0xFF, 0xFF, 0x10, 0, 0, 0, 1];
    let even_open = wire(&[Frame::Data {
        stream: 2,
        flags: FLAG_SYN,
        payload: Bytes::from_static(&[0, 0, 0, 1]),
    }]);
    let overrun = wire(&[
        Frame::Data {
            stream: 1,
            flags: FLAG_SYN,
            payload: Bytes::from(vec![0; 200 * 1024]),
        },
        Frame::Data {
            stream: 1,
            flags: 0,
            payload: Bytes::from(vec![0; 100 * 1024]),
        },
    ]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage.to_vec()),
        ("oversized", oversized.to_vec()),
        ("even stream", even_open.to_vec()),
        ("window overrun", overrun.to_vec()),
    ];
    for (name, bytes) in cases {
        let (mut peer, server) = raw_peer().await;
        peer.write_all(&bytes).await.unwrap();
        let end = assert_disconnected(peer, &server).await;
        assert!(matches!(end, SessionEnd::Protocol(_)), "{name}: {end:?}");
        assert!(
            server.open(TYPE_PROXY, b"").is_err(),
            "{name}: the session is over"
        );

        let mut s = good_server.open(TYPE_PROXY, name.as_bytes()).unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            back,
            name.as_bytes(),
            "the good session still works after {name}"
        );
    }
}

#[tokio::test]
async fn goaway_and_plain_eof_end_the_session_normally() {
    let (mut peer, server) = raw_peer().await;
    peer.write_all(&wire(&[Frame::GoAway {
        last_stream: 0,
        code: ErrorCode::None,
        message: Bytes::new(),
    }]))
    .await
    .unwrap();
    assert_eq!(server.ended().await, SessionEnd::GoAway(ErrorCode::None));

    let (peer, server) = raw_peer().await;
    drop(peer);
    assert_eq!(server.ended().await, SessionEnd::PeerClosed);
}
