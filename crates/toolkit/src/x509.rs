//! Just enough DER to show a certificate: its subject, issuer and expiry. rustls verifies
//! certificates but does not describe them, and a full X.509 parser is a large dependency for
//! three fields. Anything unexpected yields `None`, never a panic.

/// What `diagnose` shows of a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// `CN=…, O=…`.
    pub subject: String,
    /// The issuer, the same way.
    pub issuer: String,
    /// The end of its validity.
    pub not_after: jiff::Timestamp,
}

/// One DER element: its tag, its contents, and the bytes after it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// Reads subject, issuer and notAfter from a DER certificate.
pub fn read(der: &[u8]) -> Option<CertInfo> {
    let (tag, certificate, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] version, when present.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    let (_, _, rest) = element(rest)?; // serialNumber
    let (_, _, rest) = element(rest)?; // signature algorithm
    let (_, issuer, rest) = element(rest)?;
    let (_, validity, rest) = element(rest)?;
    let (_, subject, _) = element(rest)?;
    let (_, _, validity_rest) = element(validity)?; // notBefore
    let (time_tag, not_after, _) = element(validity_rest)?;
    Some(CertInfo {
        subject: name(subject),
        issuer: name(issuer),
        not_after: time(time_tag, not_after)?,
    })
}

/// `CN=…, O=…` of a Name (other attributes left out).
fn name(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((_, set, rest)) = element(rdns) {
        rdns = rest;
        let Some((_, attribute, _)) = element(set) else {
            continue;
        };
        let Some((_, oid, value)) = element(attribute) else {
            continue;
        };
        let Some((_, text, _)) = element(value) else {
            continue;
        };
        let label = match oid {
            [0x55, 0x04, 0x03] => "CN",
            [0x55, 0x04, 0x0a] => "O",
            _ => continue,
        };
        parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
    }
    parts.join(", ")
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, bytes: &[u8]) -> Option<jiff::Timestamp> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i16 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i8> { rest.get(i..i + 2)?.parse().ok() };
    let date = jiff::civil::Date::new(year, field(0)?, field(2)?).ok()?;
    let time = jiff::civil::Time::new(field(4)?, field(6)?, field(8)?, 0).ok()?;
    date.to_datetime(time)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_test_certificate() {
        let info = read(include_bytes!("../tests/data/cert.der")).expect("a certificate");
        assert_eq!(info.subject, "CN=hourglass-test.local, O=hourglass tests");
        assert_eq!(info.issuer, info.subject, "self-signed");
        assert_eq!(
            info.not_after.strftime("%Y-%m-%d").to_string(),
            "2126-11-02"
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert!(read(b"").is_none());
        assert!(read(&[0x30, 0x82, 0xff]).is_none());
        assert!(read(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
        let der = include_bytes!("../tests/data/cert.der");
        for cut in 0..der.len() {
            let _ = read(&der[..cut]);
        }
    }
}
