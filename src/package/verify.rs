//! `kudo package verify`: reference and parameter checks, as KUDO's verifiers.
