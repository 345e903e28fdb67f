//! `taglake serve`'s message handling: whatever bytes a logged-in client
//! sends, the server answers or closes that connection — it never panics
//! (a panic the connection loop caught still fails the run) and never
//! hangs. The harness is `taglake_serve::fuzzing`; its stable driver is
//! the `messages_never_panic_or_hang` test there.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use taglake_serve::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(Harness::new).run(data);
});
