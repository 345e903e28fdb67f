//! Sessions and CSRF tokens.
//!
//! A browser gets a session the first time it asks for a page: a random
//! 256-bit token in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//! under TLS; never in a URL) and, kept on the server beside it, a second
//! random token for CSRF that pages put into their forms and htmx sends as
//! a header. Every POST must carry the CSRF token of its session, or it is
//! refused ([`crate::app`]): `SameSite=Strict` already keeps other sites'
//! forms from riding on the cookie, the token also stops same-site pages
//! and old browsers.
//!
//! With a users file, a session starts anonymous (it can only log in) and
//! logging in replaces it by a new one bound to the user (a token seen
//! before the login is worth nothing after it). A session ends after
//! `session_idle` without a request, `session_max` after it began, or at
//! logout. The store is bounded ([`MAX_SESSIONS`]): when full, expired
//! sessions go first, then the least recently used, so a flood of
//! anonymous visits costs memory only up to the bound.
//!
//! The server keeps only the SHA-256 of each token, so looking one up
//! compares digests, not the secret, and a memory dump gives no cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use subtle::ConstantTimeEq;

/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// The cookie that carries the session token.
pub const COOKIE: &str = "taglake_studio";

/// A new random 256-bit token, base64url without padding (43 characters).
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    B64.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Whether `given` is the CSRF token `expected`, compared in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// What a request learns about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The logged-in user (`None`: anonymous).
    pub user: Option<String>,
    /// The token every POST of this session must carry.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    began: Instant,
    seen: Instant,
}

/// The sessions of one studio.
#[derive(Debug)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Entry>>,
    idle: Duration,
    max: Duration,
    capacity: usize,
}

impl Sessions {
    /// An empty store whose sessions end after `idle` without use or `max` in all.
    pub fn new(idle: Duration, max: Duration) -> Sessions {
        Sessions::with_capacity(idle, max, MAX_SESSIONS)
    }

    fn with_capacity(idle: Duration, max: Duration, capacity: usize) -> Sessions {
        Sessions { by_digest: Mutex::new(HashMap::new()), idle, max, capacity: capacity.max(1) }
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.seen) < self.idle && now.saturating_duration_since(e.began) < self.max
    }

    /// Starts a session for `user` (or an anonymous one); returns its
    /// cookie token and the session.
    pub fn start(&self, user: Option<String>, now: Instant) -> (String, Session) {
        let (cookie, session) = (token(), Session { user, csrf: token() });
        let mut map = self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.capacity {
            map.retain(|_, e| now.saturating_duration_since(e.seen) < self.idle);
            map.retain(|_, e| now.saturating_duration_since(e.began) < self.max);
        }
        while map.len() >= self.capacity {
            let Some(oldest) = map.iter().min_by_key(|(_, e)| e.seen).map(|(k, _)| *k) else { break };
            map.remove(&oldest);
        }
        map.insert(digest(&cookie), Entry { session: session.clone(), began: now, seen: now });
        (cookie, session)
    }

    /// The session of a cookie token, if it is known and has not expired
    /// (it counts as used now); an expired one is forgotten.
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let key = digest(cookie);
        let mut map = self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = self.live(map.get(&key)?, now);
        if !live {
            map.remove(&key);
            return None;
        }
        let e = map.get_mut(&key)?;
        e.seen = now;
        Some(e.session.clone())
    }

    /// Ends a session (logout, or the anonymous one a login replaces).
    pub fn end(&self, cookie: &str) {
        self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&digest(cookie));
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_256_bit() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(B64.decode(&a).unwrap().len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_maximum() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let (cookie, session) = s.start(Some("ana".into()), t0);
        assert_eq!(s.get(&cookie, t0 + Duration::from_secs(59)), Some(session.clone()));
        // Used at 59 s, so still alive at 118 s; idle past 60 s it ends.
        assert!(s.get(&cookie, t0 + Duration::from_secs(118)).is_some());
        assert!(s.get(&cookie, t0 + Duration::from_secs(179)).is_none());
        assert!(s.is_empty(), "an expired session is forgotten");
        // However busy, a session ends at its maximum.
        let (cookie, _) = s.start(None, t0);
        for m in 1..5 {
            assert!(s.get(&cookie, t0 + Duration::from_secs(59 * m)).is_some());
        }
        assert!(s.get(&cookie, t0 + Duration::from_secs(300)).is_none());
    }

    #[test]
    fn unknown_and_ended_sessions_are_refused() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let now = Instant::now();
        assert!(s.get("made-up", now).is_none());
        let (cookie, session) = s.start(None, now);
        assert!(s.get(&session.csrf, now).is_none(), "the CSRF token is not a cookie");
        s.end(&cookie);
        assert!(s.get(&cookie, now).is_none());
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_least_recently_used() {
        let s = Sessions::with_capacity(Duration::from_secs(60), Duration::from_secs(300), 3);
        let t0 = Instant::now();
        let cookies: Vec<String> = (0..3).map(|i| s.start(None, t0 + Duration::from_millis(i)).0).collect();
        assert!(s.get(&cookies[0], t0 + Duration::from_millis(10)).is_some());
        let (fourth, _) = s.start(None, t0 + Duration::from_millis(20));
        assert_eq!(s.len(), 3);
        let now = t0 + Duration::from_millis(30);
        assert!(s.get(&cookies[1], now).is_none(), "the least recently used went");
        assert!(s.get(&cookies[0], now).is_some() && s.get(&fourth, now).is_some());
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let t = token();
        assert!(csrf_matches(&t, &t));
        assert!(!csrf_matches(&t, ""));
        assert!(!csrf_matches(&t, &t[..42]));
        assert!(!csrf_matches(&t, &token()));
    }
}
