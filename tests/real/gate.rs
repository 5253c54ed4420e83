//! One module's tests at a time. libtest hands tests to its threads in name order, so
//! a module's tests are all handed out before the next module's first one: a test that
//! waits here only waits for the tests of the module before it to end.

use std::sync::{Condvar, Mutex, PoisonError};

struct Inside {
    module: Option<&'static str>,
    tests: usize,
}

static INSIDE: Mutex<Inside> = Mutex::new(Inside {
    module: None,
    tests: 0,
});
static LEFT: Condvar = Condvar::new();

/// Held for the whole of a test; `module` is the test's `module_path!()`.
#[must_use]
pub struct Pass;

/// Waits until no other module's test is running, then lets this one in.
pub fn enter(module: &'static str) -> Pass {
    let mut inside = INSIDE.lock().unwrap_or_else(PoisonError::into_inner);
    while inside.module.is_some_and(|m| m != module) {
        inside = LEFT.wait(inside).unwrap_or_else(PoisonError::into_inner);
    }
    inside.module = Some(module);
    inside.tests += 1;
    Pass
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut inside = INSIDE.lock().unwrap_or_else(PoisonError::into_inner);
        inside.tests -= 1;
        if inside.tests == 0 {
            inside.module = None;
            LEFT.notify_all();
        }
    }
}
