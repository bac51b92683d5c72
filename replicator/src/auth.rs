//! TLS and token authentication. The receiver makes an ephemeral key and self-signed
//! certificate at start-up (rcgen, ring); the sender accepts any certificate unless pinned with
//! `--fingerprint`, because trust comes from the token: each side proves it knows the token with
//! an HMAC over a TLS exporter value of *this* session. A man in the middle terminates two TLS
//! sessions with different exporters, so without the token neither proof can be forged or relayed,
//! and the token itself never crosses the wire.

use anyhow::{Context, Result};
use ring::hmac;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

pub type ServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;
pub type ClientStream = rustls::StreamOwned<ClientConnection, TcpStream>;

const EXPORTER_LABEL: &[u8] = b"EXPORTER-ferry-token-proof";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate, lowercase hex: what `--fingerprint` pins.
pub fn fingerprint(cert: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver's TLS identity: made fresh at every start, never stored.
pub struct Identity {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
}

impl Identity {
    pub fn ephemeral() -> Result<Self> {
        let key = rcgen::KeyPair::generate().context("generating the TLS key")?;
        let params = rcgen::CertificateParams::new(vec!["ferry-appliance".to_string()])?;
        let cert = params.self_signed(&key).context("self-signing the TLS certificate")?;
        let der = cert.der().clone();
        let fingerprint = fingerprint(&der);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![der], key_der)?;
        Ok(Identity { config: Arc::new(config), fingerprint })
    }
}

#[derive(Debug)]
struct TokenTrust {
    provider: Arc<CryptoProvider>,
    pin: Option<String>,
}

impl ServerCertVerifier for TokenTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let got = fingerprint(end_entity);
            if !got.eq_ignore_ascii_case(&pin.replace(':', "")) {
                return Err(rustls::Error::General(format!(
                    "receiver certificate fingerprint {got} does not match --fingerprint {pin}"
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

pub fn client_config(pin: Option<String>) -> Result<Arc<ClientConfig>> {
    let p = provider();
    let cfg = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TokenTrust { provider: p, pin }))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Finishes the TLS handshake on a stream so exporter values are available.
pub fn handshake<C, S>(conn: &mut C, sock: &mut TcpStream) -> Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        conn.complete_io(sock).context("TLS handshake")?;
    }
    Ok(())
}

pub fn client(sock: TcpStream, pin: Option<String>) -> Result<ClientStream> {
    let mut conn =
        ClientConnection::new(client_config(pin)?, ServerName::try_from("ferry-appliance")?.to_owned())?;
    let mut sock = sock;
    handshake(&mut conn, &mut sock)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

pub fn server(sock: TcpStream, id: &Identity) -> Result<ServerStream> {
    let mut conn = rustls::ServerConnection::new(id.config.clone())?;
    let mut sock = sock;
    handshake(&mut conn, &mut sock)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

#[derive(Clone, Copy)]
pub enum Role {
    Sender,
    Receiver,
}

fn exporter<S: rustls::SideData>(conn: &rustls::ConnectionCommon<S>) -> Result<[u8; 32]> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None).context("TLS exporter")
}

fn message(role: Role, exp: &[u8; 32]) -> Vec<u8> {
    let mut m = match role {
        Role::Sender => b"ferry-v1 sender ".to_vec(),
        Role::Receiver => b"ferry-v1 receiver ".to_vec(),
    };
    m.extend_from_slice(exp);
    m
}

/// The proof `role` sends on this connection.
pub fn proof<S: rustls::SideData>(
    conn: &rustls::ConnectionCommon<S>,
    token: &str,
    role: Role,
) -> Result<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&key, &message(role, &exporter(conn)?));
    Ok(tag.as_ref().try_into().unwrap())
}

/// Checks (in constant time) a proof received from the peer playing `role`.
pub fn check<S: rustls::SideData>(
    conn: &rustls::ConnectionCommon<S>,
    token: &str,
    role: Role,
    got: &[u8; 32],
) -> Result<bool> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    Ok(hmac::verify(&key, &message(role, &exporter(conn)?), got).is_ok())
}

/// Both ends of a stream, for the frame reader/writer.
pub trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}
