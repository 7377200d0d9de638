//! MQTT 3.1.1 and 5 packets, as much of them as a device server needs, on rumqttc's own
//! packet codec (`rumqttc::mqttbytes` for 3.1.1, `rumqttc::v5::mqttbytes` for 5): the
//! maintained codec of the client the service already uses, so no second MQTT stack.
//! The protocol level is read from the CONNECT packet; every later packet of the
//! connection is read and written in that version.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V311,
    V5,
}

/// A packet from a device, reduced to what the server acts on.
#[derive(Debug)]
pub(super) enum Incoming {
    Connect {
        version: Version,
        client_id: String,
        keep_alive_secs: u16,
        login: Option<(String, String)>,
    },
    Publish {
        topic: String,
        payload: Bytes,
        pkid: u16,
        qos: u8,
    },
    PubRel {
        pkid: u16,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
    /// Anything a device does not send to a server (CONNACK, SUBACK, …), or acks of
    /// our QoS 0 alert publishes that need nothing.
    Ignored,
}

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum CodecError {
    #[error("MQTT 3.1.1: {0}")]
    V311(#[from] rumqttc::mqttbytes::Error),
    #[error("MQTT 5: {0}")]
    V5(#[from] rumqttc::v5::mqttbytes::Error),
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("protocol level {0}: only MQTT 3.1.1 (4) and 5 are spoken")]
    Level(u8),
}

/// Bytes wanted before a packet can be read: `None` when one is complete in `buf`.
fn need(buf: &BytesMut, max: usize) -> Result<Option<usize>, CodecError> {
    match rumqttc::mqttbytes::check(buf.iter(), max) {
        Ok(_) => Ok(None),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(n)) => Ok(Some(n)),
        Err(e) => Err(e.into()),
    }
}

/// Reads the CONNECT that opens a connection, or `Ok(None)` until it is complete.
pub(super) fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, CodecError> {
    if need(buf, max)?.is_some() {
        return Ok(None);
    }
    if buf.first().map(|b| b >> 4) != Some(1) {
        return Err(CodecError::NotConnect);
    }
    // The fixed header: the type byte and 1–4 bytes of remaining length (a varint);
    // then the protocol name (2-byte length + "MQTT") and the level.
    let len_bytes = buf[1..]
        .iter()
        .take(4)
        .position(|b| b & 0x80 == 0)
        .ok_or(CodecError::NotConnect)?
        + 1;
    let level = buf
        .get(1 + len_bytes + 6)
        .copied()
        .ok_or(CodecError::NotConnect)?;
    let version = match level {
        4 => Version::V311,
        5 => Version::V5,
        l => return Err(CodecError::Level(l)),
    };
    read(version, buf, max)
}

/// Reads the next packet of a connection in `version`, or `Ok(None)` until one is
/// complete in `buf`.
pub(super) fn read(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Incoming>, CodecError> {
    if need(buf, max)?.is_some() {
        return Ok(None);
    }
    Ok(Some(match version {
        Version::V311 => from_v4(v4::Packet::read(buf, max)?),
        Version::V5 => from_v5(v5::Packet::read(buf, Some(max as u32))?),
    }))
}

fn from_v4(p: v4::Packet) -> Incoming {
    match p {
        v4::Packet::Connect(c) => Incoming::Connect {
            version: Version::V311,
            client_id: c.client_id,
            keep_alive_secs: c.keep_alive,
            login: c.login.map(|l| (l.username, l.password)),
        },
        v4::Packet::Publish(p) => Incoming::Publish {
            topic: p.topic,
            payload: p.payload,
            pkid: p.pkid,
            qos: p.qos as u8,
        },
        v4::Packet::PubRel(r) => Incoming::PubRel { pkid: r.pkid },
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| f.path).collect(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect,
        _ => Incoming::Ignored,
    }
}

fn from_v5(p: v5::Packet) -> Incoming {
    match p {
        v5::Packet::Connect(c, _, login) => Incoming::Connect {
            version: Version::V5,
            client_id: c.client_id,
            keep_alive_secs: c.keep_alive,
            login: login.map(|l| (l.username, l.password)),
        },
        v5::Packet::Publish(p) => Incoming::Publish {
            // Topic aliases are not granted (CONNACK says 0), so the topic is whole.
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            pkid: p.pkid,
            qos: p.qos as u8,
        },
        v5::Packet::PubRel(r) => Incoming::PubRel { pkid: r.pkid },
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| f.path).collect(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(_) => Incoming::Disconnect,
        _ => Incoming::Ignored,
    }
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectAnswer {
    Accepted,
    BadCredentials,
}

/// Packets the server writes.
#[derive(Debug)]
pub(super) enum Outgoing<'a> {
    ConnAck(ConnectAnswer),
    PubAck(u16),
    /// MQTT 5 only: the publish was refused, not stored ("not authorized").
    PubAckRefused(u16),
    PubRec(u16),
    PubComp(u16),
    /// Granted QoS per filter; `None` refuses that filter.
    SubAck(u16, &'a [Option<u8>]),
    UnsubAck(u16, usize),
    PingResp,
    /// A retained or live alert at QoS 0.
    Publish {
        topic: &'a str,
        payload: &'a Bytes,
        retain: bool,
    },
}

/// Appends `p` to `out` in `version`.
pub(super) fn write(
    version: Version,
    p: Outgoing<'_>,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    match version {
        Version::V311 => {
            write_v4(p, out)?;
        }
        Version::V5 => {
            write_v5(p, out)?;
        }
    }
    Ok(())
}

fn write_v4(p: Outgoing<'_>, out: &mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error> {
    let qos = |q: u8| match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    };
    let packet = match p {
        Outgoing::ConnAck(a) => v4::Packet::ConnAck(v4::ConnAck::new(
            match a {
                ConnectAnswer::Accepted => v4::ConnectReturnCode::Success,
                ConnectAnswer::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
            },
            false,
        )),
        Outgoing::PubAck(pkid) => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        // 3.1.1 has no refusal code: the caller closes the connection instead.
        Outgoing::PubAckRefused(_) => return Ok(0),
        Outgoing::PubRec(pkid) => v4::Packet::PubRec(v4::PubRec::new(pkid)),
        Outgoing::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
        Outgoing::SubAck(pkid, granted) => v4::Packet::SubAck(v4::SubAck::new(
            pkid,
            granted
                .iter()
                .map(|g| match g {
                    Some(q) => v4::SubscribeReasonCode::Success(qos(*q)),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outgoing::UnsubAck(pkid, _) => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
        Outgoing::PingResp => v4::Packet::PingResp,
        Outgoing::Publish {
            topic,
            payload,
            retain,
        } => v4::Packet::Publish(v4::Publish {
            dup: false,
            qos: rumqttc::QoS::AtMostOnce,
            retain,
            topic: topic.to_owned(),
            pkid: 0,
            payload: payload.clone(),
        }),
    };
    packet.write(out, usize::MAX)
}

fn write_v5(p: Outgoing<'_>, out: &mut BytesMut) -> Result<usize, rumqttc::v5::mqttbytes::Error> {
    use rumqttc::v5::mqttbytes::QoS;
    let qos = |q: u8| match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let packet = match p {
        Outgoing::ConnAck(a) => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match a {
                ConnectAnswer::Accepted => v5::ConnectReturnCode::Success,
                ConnectAnswer::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
            },
            properties: None,
        }),
        Outgoing::PubAck(pkid) => v5::Packet::PubAck(v5::PubAck::new(pkid, None)),
        Outgoing::PubAckRefused(pkid) => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: v5::PubAckReason::NotAuthorized,
            properties: None,
        }),
        Outgoing::PubRec(pkid) => v5::Packet::PubRec(v5::PubRec::new(pkid, None)),
        Outgoing::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
        Outgoing::SubAck(pkid, granted) => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: granted
                .iter()
                .map(|g| match g {
                    Some(q) => v5::SubscribeReasonCode::Success(qos(*q)),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }),
        Outgoing::UnsubAck(pkid, n) => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; n],
            properties: None,
        }),
        Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outgoing::Publish {
            topic,
            payload,
            retain,
        } => v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            pkid: 0,
            payload: payload.clone(),
            properties: None,
        }),
    };
    packet.write(out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_v4() -> BytesMut {
        let mut b = BytesMut::new();
        let mut c = v4::Connect::new("dev-1");
        c.set_login("u", "p");
        v4::Packet::Connect(c).write(&mut b, usize::MAX).unwrap();
        b
    }

    #[test]
    fn a_connect_names_its_version_and_partial_packets_wait() {
        let whole = connect_v4();
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(read_connect(&mut part, 1024).unwrap().is_none());
        let mut all = whole.clone();
        match read_connect(&mut all, 1024).unwrap() {
            Some(Incoming::Connect {
                version,
                client_id,
                login,
                ..
            }) => {
                assert_eq!(version, Version::V311);
                assert_eq!(client_id, "dev-1");
                assert_eq!(login, Some(("u".into(), "p".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(all.is_empty(), "the packet was consumed");
    }

    #[test]
    fn a_publish_round_trips_in_both_versions() {
        for version in [Version::V311, Version::V5] {
            let mut b = BytesMut::new();
            let payload = Bytes::from_static(b"{\"pm10\":1}");
            write(
                version,
                Outgoing::Publish {
                    topic: "aq/alerts/s",
                    payload: &payload,
                    retain: true,
                },
                &mut b,
            )
            .unwrap();
            match read(version, &mut b, 1024).unwrap() {
                Some(Incoming::Publish {
                    topic,
                    payload: p,
                    qos,
                    ..
                }) => {
                    assert_eq!(
                        (topic.as_str(), &p[..], qos),
                        ("aq/alerts/s", &payload[..], 0)
                    );
                }
                other => panic!("{version:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_non_connect_first_packet_is_refused() {
        let mut b = BytesMut::new();
        v4::Packet::PingReq.write(&mut b, usize::MAX).unwrap();
        assert!(matches!(
            read_connect(&mut b, 1024),
            Err(CodecError::NotConnect)
        ));
    }
}
