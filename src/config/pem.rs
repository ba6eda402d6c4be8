//! PEM text for TLS: the certificates of a bundle, and a client private key
//! in the PKCS#8 form native-tls takes. A PKCS#1 RSA key ("BEGIN RSA
//! PRIVATE KEY", what older `openssl genrsa` and many guides produce, and
//! what libpq accepts) is rewrapped as PKCS#8 here; other forms get the
//! exact openssl command that converts them.

use anyhow::{Result, bail};

/// The `-----BEGIN CERTIFICATE-----` blocks of `text`, each as PEM text.
/// native-tls parses only the first certificate of a PEM buffer, and a CA
/// bundle often holds several.
pub fn certificate_blocks(text: &str) -> Vec<String> {
    blocks(text)
        .into_iter()
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.text.to_owned())
        .collect()
}

/// The private key in `text` as PKCS#8 PEM. `name` says where the key came
/// from, for messages; `file` is its path, or a placeholder when the PEM
/// text was inline, for the openssl commands the messages suggest.
pub fn pkcs8_key(text: &str, name: &str, file: &str) -> Result<String> {
    let keys: Vec<Block> = blocks(text)
        .into_iter()
        .filter(|block| block.label.ends_with("PRIVATE KEY"))
        .collect();
    let key = match keys.as_slice() {
        [key] => key,
        [] => bail!("{name} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"),
        _ => bail!(
            "{name} holds {} private keys: keep only the one of the certificate",
            keys.len()
        ),
    };
    let convert = format!("openssl pkcs8 -topk8 -nocrypt -in {file} -out {file}.pk8");
    match key.label {
        "PRIVATE KEY" => Ok(key.text.to_owned()),
        "RSA PRIVATE KEY" if key.has_headers => bail!(
            "{name} is an encrypted RSA key, which pgsense-pg cannot decrypt: \
             write it unencrypted with `{convert}` (it asks for the passphrase), \
             keep the result readable by its owner only, and use that"
        ),
        "RSA PRIVATE KEY" => {
            let pkcs1 = base64_decode(key.body).ok_or_else(|| {
                anyhow::anyhow!("{name}: the RSA private key is not valid base64")
            })?;
            Ok(pem("PRIVATE KEY", &pkcs1_to_pkcs8(&pkcs1)))
        }
        "ENCRYPTED PRIVATE KEY" => bail!(
            "{name} is an encrypted key, which pgsense-pg cannot decrypt: write it \
             unencrypted with `openssl pkcs8 -in {file} -out {file}.pk8` (it asks for the \
             passphrase), keep the result readable by its owner only, and use that"
        ),
        other => bail!(
            "{name} is a \"{other}\", which pgsense-pg cannot read: convert it to PKCS#8 \
             with `{convert}` and use {file}.pk8"
        ),
    }
}

/// One `-----BEGIN label-----` ... `-----END label-----` block.
struct Block<'a> {
    label: &'a str,
    /// The whole block, BEGIN and END lines included.
    text: &'a str,
    /// The base64 between the BEGIN and END lines (headers excluded).
    body: &'a str,
    /// Whether the block has RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`).
    has_headers: bool,
}

fn blocks(text: &str) -> Vec<Block<'_>> {
    const BEGIN: &str = "-----BEGIN ";
    let mut found = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let Some(label_end) = after_begin.find("-----") else {
            break;
        };
        let label = &after_begin[..label_end];
        let end_line = format!("-----END {label}-----");
        let body_start = start + BEGIN.len() + label_end + "-----".len();
        let Some(end) = rest[body_start..].find(&end_line) else {
            break;
        };
        let block_end = body_start + end + end_line.len();
        let inner = &rest[body_start..body_start + end];
        let (has_headers, body) = match inner.find("\n\n").or_else(|| inner.find("\r\n\r\n")) {
            Some(blank) if inner[..blank].contains(':') => (true, &inner[blank..]),
            _ => (false, inner),
        };
        found.push(Block {
            label,
            text: &text[offset + start..offset + block_end],
            body,
            has_headers,
        });
        offset += block_end;
        rest = &rest[block_end..];
    }
    found
}

/// Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (RFC 5208):
/// SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption, NULL }, OCTET STRING }.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_0: &[u8] = &[0x02, 0x01, 0x00];
    // 1.2.840.113549.1.1.1 with NULL parameters.
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut octets = vec![0x04];
    der_length(&mut octets, pkcs1.len());
    octets.extend_from_slice(pkcs1);
    let content_len = VERSION_0.len() + RSA_ALGORITHM.len() + octets.len();
    let mut der = vec![0x30];
    der_length(&mut der, content_len);
    der.extend_from_slice(VERSION_0);
    der.extend_from_slice(RSA_ALGORITHM);
    der.extend_from_slice(&octets);
    der
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let significant = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64_encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// A few lines of base64 rather than a crate: PEM bodies are the only use.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, skipping whitespace; None for anything else malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return None;
        }
        let value = BASE64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (padding <= 2 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let encoded = base64_encode(&bytes);
            assert_eq!(encoded.len() % 4, 0);
            assert_eq!(
                base64_decode(&encoded).as_deref(),
                Some(&bytes[..]),
                "{len}"
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(
            base64_decode("Zm9v\nYmE=\n").as_deref(),
            Some(&b"fooba"[..])
        );
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Zm=9v"), None);
    }

    #[test]
    fn der_lengths() {
        let encode = |len| {
            let mut out = Vec::new();
            der_length(&mut out, len);
            out
        };
        assert_eq!(encode(5), [5]);
        assert_eq!(encode(0x7f), [0x7f]);
        assert_eq!(encode(0x80), [0x81, 0x80]);
        assert_eq!(encode(1191), [0x82, 0x04, 0xa7]);
        assert_eq!(encode(0x01_00_00), [0x83, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn certificate_bundles_are_split() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nREVG\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificate_blocks(text),
            [
                "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----",
                "-----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----"
            ]
        );
        assert!(certificate_blocks("no pem here").is_empty());
    }

    #[test]
    fn pkcs1_keys_are_rewrapped_and_others_get_a_command() {
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----";
        assert_eq!(pkcs8_key(pkcs8, "k", "k").unwrap(), pkcs8);

        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAQID\n-----END RSA PRIVATE KEY-----\n";
        let converted = pkcs8_key(pkcs1, "k", "k").unwrap();
        let der = base64_decode(
            converted
                .strip_prefix("-----BEGIN PRIVATE KEY-----\n")
                .and_then(|t| t.strip_suffix("-----END PRIVATE KEY-----\n"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            der,
            [
                0x30, 0x17, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                0x0d, 0x01, 0x01, 0x01, 0x05, 0x00, 0x04, 0x03, 0x01, 0x02, 0x03
            ]
        );

        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                         DEK-Info: AES-128-CBC,00\n\nAQID\n-----END RSA PRIVATE KEY-----\n";
        let err = pkcs8_key(encrypted, "key", "/k.pem")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("openssl pkcs8 -topk8 -nocrypt -in /k.pem -out /k.pem.pk8"),
            "{err}"
        );

        let ec = "-----BEGIN EC PRIVATE KEY-----\nAQID\n-----END EC PRIVATE KEY-----\n";
        let err = pkcs8_key(ec, "key", "/k.pem").unwrap_err().to_string();
        assert!(
            err.contains("openssl pkcs8 -topk8 -nocrypt -in /k.pem -out /k.pem.pk8"),
            "{err}"
        );

        let err = pkcs8_key(
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----",
            "k",
            "k",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no PEM private key"), "{err}");
    }
}
