//! TLS 1.3 and token authentication. The receiver makes an ephemeral key and self-signed
//! certificate at start-up (rcgen, ring); the sender accepts any certificate unless pinned with
//! `--fingerprint`, because trust comes from the token, through SPAKE2 (a PAKE): both sides
//! derive a key from the token and fresh secrets, with identities bound to a TLS exporter value
//! of *this* session, and confirm it with HMACs. Someone without the token — a fake receiver
//! at a spoofed address, a man in the middle with two TLS sessions — gets one online guess per
//! connection and nothing to test guesses against offline; the receiver rate-limits failures.

use crate::proto::{self, write_frame, Msg, TargetInfo};
use anyhow::{Context, Result};
use ring::hmac;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme};
use spake2::{Ed25519Group, Identity as PakeId, Password, Spake2};
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
            .with_protocol_versions(&[&rustls::version::TLS13])?
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
        .with_protocol_versions(&[&rustls::version::TLS13])?
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

pub fn exporter_value<S: rustls::SideData>(conn: &rustls::ConnectionCommon<S>) -> Result<[u8; 32]> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None).context("TLS exporter")
}

/// SPAKE2 identities: the role and this TLS session's exporter value, so keys from two
/// different TLS sessions (a man in the middle) never agree.
fn pake_ids(exp: &[u8; 32]) -> (PakeId, PakeId) {
    let id = |role: &[u8]| PakeId::new(&[b"ferry-v2 ".as_slice(), role, b" ", exp].concat());
    (id(b"sender"), id(b"receiver"))
}

/// A SPAKE2 exchange in progress on one side.
pub struct Pake(Spake2<Ed25519Group>);

/// What each role's key confirmation MACs.
fn confirm_label(role: Role) -> &'static [u8] {
    match role {
        Role::Sender => b"ferry-v2 confirm sender",
        Role::Receiver => b"ferry-v2 confirm receiver",
    }
}

/// Key confirmation `role` sends under the agreed key.
pub fn confirmation(key: &[u8], role: Role) -> [u8; 32] {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), confirm_label(role))
        .as_ref()
        .try_into()
        .expect("HMAC-SHA256 is 32 bytes")
}

/// Checks (in constant time) the confirmation the peer playing `role` sent.
pub fn confirmed(key: &[u8], role: Role, got: &[u8; 32]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), confirm_label(role), got).is_ok()
}

impl Pake {
    /// Starts the exchange for `role`; returns the message to send.
    pub fn start<S: rustls::SideData>(
        conn: &rustls::ConnectionCommon<S>,
        token: &str,
        role: Role,
    ) -> Result<(Pake, Vec<u8>)> {
        let (a, b) = pake_ids(&exporter_value(conn)?);
        let pw = Password::new(token.as_bytes());
        let (st, msg) = match role {
            Role::Sender => Spake2::<Ed25519Group>::start_a(&pw, &a, &b),
            Role::Receiver => Spake2::<Ed25519Group>::start_b(&pw, &a, &b),
        };
        Ok((Pake(st), msg))
    }

    /// The shared key, from the peer's message (malformed messages are an error).
    pub fn finish(self, peer: &[u8]) -> Result<Vec<u8>> {
        self.0.finish(peer).map_err(|e| anyhow::anyhow!("malformed SPAKE2 message: {e:?}"))
    }
}

/// The sender's side of the handshake on a fresh TLS stream: SPAKE2, then key confirmation
/// both ways. Returns the targets the receiver offers.
pub fn client_handshake(s: &mut ClientStream, token: &str) -> Result<Vec<TargetInfo>> {
    let (pake, msg) = Pake::start(&s.conn, token, Role::Sender)?;
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    write_frame(
        s,
        &Msg::Hello {
            magic: proto::MAGIC,
            version: proto::VERSION,
            pake: msg.into(),
            client: format!("ferry {} on {host}", env!("CARGO_PKG_VERSION")),
        },
    )
    .context("sending Hello")?;
    let Msg::Challenge { pake: theirs } = proto::expect(s, "Challenge")? else { unreachable!() };
    let key = pake.finish(&theirs)?;
    write_frame(s, &Msg::Proof { mac: confirmation(&key, Role::Sender) }).context("sending Proof")?;
    let Msg::Welcome { mac, targets } = proto::expect(s, "Welcome")? else { unreachable!() };
    anyhow::ensure!(
        confirmed(&key, Role::Receiver, &mac),
        "the receiver could not prove it knows the token: wrong token, or a man in the middle; nothing was sent"
    );
    Ok(targets)
}

/// Both ends of a stream, for the frame reader/writer.
pub trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}
