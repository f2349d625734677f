//! A timeline printer for the demos: each line stamped with the seconds since the start.

use std::time::Instant;

/// Prints `[  1.23s] what` lines, counted from when it was made.
pub struct Clock(pub Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn say(&self, what: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.0.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}
