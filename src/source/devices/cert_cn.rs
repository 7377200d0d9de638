//! The subject common name (CN) of a DER X.509 certificate that rustls has already
//! verified: a device's identity on the TLS listener. A small reader of the few DER
//! structures on the way (Certificate → TBSCertificate → subject Name → the CN
//! attribute), so no X.509 crate is needed for one string; anything unexpected gives
//! `None` (the client then has no certificate identity and must log in).

/// `2.5.4.3`, id-at-commonName.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// One DER element: its tag, its contents and what follows it.
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The CN in the subject of `der`, when it has one that is valid text.
pub(super) fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert, _) = element(der)?; // Certificate SEQUENCE
    let (_, tbs, _) = element(cert)?; // TBSCertificate SEQUENCE
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity, then subject.
    let (tag, _, r) = element(rest)?;
    rest = if tag == 0xa0 { r } else { rest };
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (_, subject, _) = element(rest)?;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, r) = element(rdns)?; // RelativeDistinguishedName SET
        rdns = r;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, r) = element(atvs)?; // AttributeTypeAndValue SEQUENCE
            atvs = r;
            let (oid_tag, oid, value) = element(atv)?;
            if oid_tag == 0x06 && oid == CN_OID {
                let (_, text, _) = element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element with `tag` around `content` (short or long length form).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.extend([0x82, (content.len() >> 8) as u8, content.len() as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    fn name(cn: &str) -> Vec<u8> {
        let atv = [tlv(0x06, &CN_OID), tlv(0x0c, cn.as_bytes())].concat();
        tlv(0x30, &tlv(0x31, &tlv(0x30, &atv)))
    }

    #[test]
    fn the_subject_cn_not_the_issuer_s() {
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1, 2, 3]),
            tlv(0x30, &tlv(0x06, &[0x2a])),
            name("the-ca"),
            tlv(0x30, &[]),
            name("dev-a"),
            tlv(0x30, &[0u8; 200]),
        ]
        .concat();
        let cert = tlv(
            0x30,
            &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat(),
        );
        assert_eq!(subject_cn(&cert).as_deref(), Some("dev-a"));
        assert_eq!(subject_cn(&cert[..10]), None, "truncated");
        assert_eq!(subject_cn(b"garbage"), None);
    }
}
