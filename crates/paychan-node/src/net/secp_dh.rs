//! secp256k1 Diffie-Hellman for `snow`, so that the payee's Noise static key is its node key.
//!
//! `snow` ships X25519 and X448 only; it takes other primitives through a [`CryptoResolver`].
//! This one hands it libsecp256k1's ECDH (through the `bitcoin` crate's `secp256k1`): the
//! shared secret is SHA-256 of the compressed shared point, as in Lightning's BOLT 8, and keys
//! are 33-byte compressed points. The cipher, the hash and the random source stay `snow`'s
//! own. Nothing here computes on the curve itself.

use bitcoin::secp256k1::{ecdh::SharedSecret, PublicKey, Secp256k1, SecretKey};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The name of this Diffie-Hellman function in the Noise protocol name.
pub const DH_NAME: &str = "secp256k1";

/// Resolves every Diffie-Hellman choice to secp256k1, the rest as `snow` does.
pub struct Secp256k1Resolver;

impl CryptoResolver for Secp256k1Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, _choice: &DHChoice) -> Option<Box<dyn Dh>> {
        Some(Box::new(Secp256k1Dh::default()))
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// One secp256k1 key pair, as `snow` holds its static and ephemeral keys.
#[derive(Default)]
struct Secp256k1Dh {
    keys: Option<(SecretKey, [u8; 32], [u8; 33])>,
}

impl Secp256k1Dh {
    fn set_secret(&mut self, secret: SecretKey) {
        let public = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
        self.keys = Some((secret, secret.secret_bytes(), public.serialize()));
    }
}

impl Dh for Secp256k1Dh {
    fn name(&self) -> &'static str {
        DH_NAME
    }

    fn pub_len(&self) -> usize {
        33
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn dh_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        // `snow` checks the length; a key out of range leaves no key, and `dh` then fails.
        match SecretKey::from_slice(privkey) {
            Ok(secret) => self.set_secret(secret),
            Err(_) => self.keys = None,
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = [0u8; 32];
        // A random 32 bytes is out of range about once in 2^128 tries.
        loop {
            rng.try_fill_bytes(&mut bytes)?;
            if let Ok(secret) = SecretKey::from_slice(&bytes) {
                self.set_secret(secret);
                return Ok(());
            }
        }
    }

    fn pubkey(&self) -> &[u8] {
        self.keys.as_ref().map_or(&[], |(_, _, public)| public)
    }

    fn privkey(&self) -> &[u8] {
        self.keys.as_ref().map_or(&[], |(_, secret, _)| secret)
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let (secret, _, _) = self.keys.as_ref().ok_or(snow::Error::Dh)?;
        // `snow` hands over its whole key buffer: the point is its first 33 bytes.
        let point = pubkey.get(..33).ok_or(snow::Error::Dh)?;
        let point = PublicKey::from_slice(point).map_err(|_| snow::Error::Dh)?;
        let shared = SharedSecret::new(&point, secret);
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&shared.secret_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_reach_the_same_secret_and_a_bad_point_is_refused() {
        let (mut a, mut b) = (Secp256k1Dh::default(), Secp256k1Dh::default());
        a.set(&[1; 32]);
        b.set(&[2; 32]);
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        a.dh(b.pubkey(), &mut ab).unwrap();
        b.dh(a.pubkey(), &mut ba).unwrap();
        assert_eq!(ab, ba);
        assert_ne!(ab, [0; 32]);
        assert_eq!(a.pubkey().len(), 33);
        let mut out = [0u8; 32];
        assert!(a.dh(&[0x05; 33], &mut out).is_err(), "not a point");
        assert!(a.dh(&[7; 10], &mut out).is_err(), "too short");
        // What follows the point in snow's buffer is not read.
        let mut padded = b.pubkey().to_vec();
        padded.extend([0xff; 23]);
        a.dh(&padded, &mut out).unwrap();
        assert_eq!(out, ab);
        let mut none = Secp256k1Dh::default();
        none.set(&[0; 32]);
        assert!(none.dh(b.pubkey(), &mut out).is_err());
    }
}
