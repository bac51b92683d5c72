//! Key derivation: PBKDF2-HMAC (sha1, sha256, sha512) and Argon2i/Argon2id (version 0x13, as
//! LUKS2 uses them), with the costs a hostile header may name bounded before any work or
//! allocation. Argon2's memory is reserved fallibly, so a cost the machine cannot hold is an
//! error instead of an abort.

use super::LuksError;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::{Zeroize, Zeroizing};

/// PBKDF2 iterations above this are refused: a hostile header could otherwise keep the
/// appliance busy for hours (cryptsetup's 2 s benchmark gives a few million on fast CPUs).
pub const MAX_PBKDF2_ITERATIONS: u32 = 100_000_000;
/// Argon2 memory above 4 GiB (in KiB) is refused; it is cryptsetup's own maximum.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Argon2 passes above this are refused (cryptsetup's benchmark picks tens at most).
pub const MAX_ARGON2_TIME: u32 = 1000;
/// Argon2 lanes above this are refused (cryptsetup caps its threads at 4).
pub const MAX_ARGON2_CPUS: u32 = 64;
/// Salts longer than this are refused (LUKS uses 32).
pub const MAX_SALT: usize = 1024;

/// The hashes LUKS names for PBKDF2, the anti-forensic diffusion and the header checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    /// By cryptsetup's name; anything else is [`LuksError::Unsupported`] naming `what`.
    pub fn parse(name: &str, what: &str) -> Result<Hash, LuksError> {
        match name {
            "sha1" => Ok(Hash::Sha1),
            "sha256" => Ok(Hash::Sha256),
            "sha512" => Ok(Hash::Sha512),
            _ => Err(LuksError::Unsupported(format!("{what} hash {name:?}"))),
        }
    }

    pub fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// The digest of the concatenated `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        use sha2::Digest;
        fn run<D: Digest>(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            Zeroizing::new(d.finalize().to_vec())
        }
        match self {
            Hash::Sha1 => run::<sha1::Sha1>(parts),
            Hash::Sha256 => run::<sha2::Sha256>(parts),
            Hash::Sha512 => run::<sha2::Sha512>(parts),
        }
    }
}

/// A KDF as a keyslot (or digest) names it, already range-checked.
#[derive(Debug, Clone)]
pub enum Kdf {
    Pbkdf2 { hash: Hash, iterations: u32, salt: Vec<u8> },
    Argon2 { id: bool, time: u32, memory_kib: u32, cpus: u32, salt: Vec<u8> },
}

impl Kdf {
    pub fn pbkdf2(hash: Hash, iterations: u64, salt: Vec<u8>, at: &str) -> Result<Kdf, LuksError> {
        if iterations == 0 {
            return Err(LuksError::Malformed(format!("{at}: pbkdf2 iterations 0")));
        }
        let iterations = u32::try_from(iterations)
            .ok()
            .filter(|&i| i <= MAX_PBKDF2_ITERATIONS)
            .ok_or_else(|| too_costly(at, "pbkdf2 iterations", iterations, MAX_PBKDF2_ITERATIONS))?;
        check_salt(&salt, 1, at)?;
        Ok(Kdf::Pbkdf2 { hash, iterations, salt })
    }

    pub fn argon2(
        id: bool,
        time: u64,
        memory_kib: u64,
        cpus: u64,
        salt: Vec<u8>,
        at: &str,
    ) -> Result<Kdf, LuksError> {
        let bounded = |v: u64, name: &str, max: u32| {
            u32::try_from(v).ok().filter(|&x| x <= max).ok_or_else(|| too_costly(at, name, v, max))
        };
        let time = bounded(time, "argon2 time", MAX_ARGON2_TIME)?;
        let memory_kib = bounded(memory_kib, "argon2 memory (KiB)", MAX_ARGON2_MEMORY_KIB)?;
        let cpus = bounded(cpus, "argon2 cpus", MAX_ARGON2_CPUS)?;
        if time == 0 || cpus == 0 || memory_kib < 8 * cpus {
            return Err(LuksError::Malformed(format!(
                "{at}: argon2 time {time}, memory {memory_kib} KiB, cpus {cpus} out of range"
            )));
        }
        check_salt(&salt, 8, at)?;
        Ok(Kdf::Argon2 { id, time, memory_kib, cpus, salt })
    }

    /// Derives `out_len` bytes from `secret`.
    pub fn derive(&self, secret: &[u8], out_len: usize) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        let mut out = Zeroizing::new(vec![0u8; out_len]);
        match self {
            Kdf::Pbkdf2 { hash, iterations, salt } => {
                let (s, i, o) = (salt.as_slice(), *iterations, out.as_mut_slice());
                match hash {
                    Hash::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(secret, s, i, o),
                    Hash::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret, s, i, o),
                    Hash::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(secret, s, i, o),
                }
            }
            Kdf::Argon2 { id, time, memory_kib, cpus, salt } => {
                let params = Params::new(*memory_kib, *time, *cpus, Some(out_len))
                    .map_err(|e| LuksError::Malformed(format!("argon2 parameters: {e}")))?;
                let alg = if *id { Algorithm::Argon2id } else { Algorithm::Argon2i };
                let blocks = params.block_count();
                let mut memory: Vec<Block> = Vec::new();
                memory.try_reserve_exact(blocks).map_err(|_| {
                    LuksError::Unsupported(format!("argon2 memory {memory_kib} KiB: cannot allocate it"))
                })?;
                memory.resize(blocks, Block::default());
                let r = Argon2::new(alg, Version::V0x13, params).hash_password_into_with_memory(
                    secret,
                    salt,
                    &mut out,
                    &mut memory,
                );
                memory.iter_mut().for_each(Zeroize::zeroize);
                r.map_err(|e| LuksError::Malformed(format!("argon2: {e}")))?;
            }
        }
        Ok(out)
    }
}

fn check_salt(salt: &[u8], min: usize, at: &str) -> Result<(), LuksError> {
    if salt.len() < min || salt.len() > MAX_SALT {
        return Err(LuksError::Malformed(format!("{at}: salt of {} bytes", salt.len())));
    }
    Ok(())
}

fn too_costly(at: &str, what: &str, value: u64, max: u32) -> LuksError {
    LuksError::Unsupported(format!("{at}: {what} {value} above this library's limit {max}"))
}

/// Equality without an early exit on the first differing byte.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
