//! The render budget: what one template execution may use, so a hostile or broken
//! template (from Git or a package repository) ends in a render error naming the template
//! and the limit instead of a stack overflow, an allocation abort or a hang.
//!
//! Go's text/template only caps template recursion (100,000 calls) and relies on
//! goroutine stacks that grow to 1 GB; ours run on fixed thread stacks, so nesting is
//! capped much lower (see [`RenderBudget::max_depth`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Stack that must be left before one more nesting level runs; below it, the level runs
/// on a fresh heap-allocated stack segment of [`STACK_SEGMENT`] bytes. One level takes at
/// most ~12 KiB in a debug build plus value walks (`max_value_depth` levels, well under
/// 100 KiB); measured by `one_nesting_level_fits_the_stack_budget`.
pub const RED_ZONE: usize = 256 * 1024;
/// Size of each stack segment added when the red zone is reached.
pub const STACK_SEGMENT: usize = 4 * MIB;

/// Runs `f` with at least [`RED_ZONE`] bytes of stack, whatever thread renders (tokio
/// workers and test threads have 2 MiB, the main thread 8 MiB).
pub fn with_stack<T>(f: impl FnOnce() -> T) -> T {
    stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, f)
}

/// Limits for one template execution. Each overrun is a render error
/// (`template "x.yaml": output exceeds 16 MiB (render budget)`), handled like any other:
/// the revision is refused and the last good one keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderBudget {
    /// Nesting of `template` calls, `if`/`with`/`range` blocks and parenthesised pipelines,
    /// during execution and (for blocks and parentheses) at parse time. Default 1,000
    /// (Go allows 100,000 template calls and has no limit on blocks). Each level checks
    /// that [`RED_ZONE`] bytes of stack are left and otherwise continues on a new
    /// heap-allocated segment, so the depth does not depend on the thread's stack size;
    /// one level takes at most ~12 KiB in a debug build, so 1,000 levels need ~12 MiB.
    pub max_depth: usize,
    /// Nesting of lists and maps that printing, `toYaml`, `toJson`, `deepCopy` and
    /// `deepEqual` walk (default 100; Go has no limit and overflows its stack on cycles).
    pub max_value_depth: usize,
    /// Bytes one execution may write (default 16 MiB).
    pub max_output_bytes: usize,
    /// Bytes of any string a function produces (default 16 MiB).
    pub max_string_bytes: usize,
    /// Elements of any list or map a function produces, and values `deepCopy` copies
    /// (default 1,000,000).
    pub max_list_len: usize,
    /// Wall time of one execution (default 10 s), checked every few hundred steps of the
    /// executor and of long-running functions.
    pub max_time: Duration,
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget {
            max_depth: 1000,
            max_value_depth: 100,
            max_output_bytes: 16 * MIB,
            max_string_bytes: 16 * MIB,
            max_list_len: 1_000_000,
            max_time: Duration::from_secs(10),
        }
    }
}

/// Which limit an execution ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overrun {
    #[error("nesting exceeds {0} levels of template calls, blocks or parentheses")]
    Depth(usize),
    #[error("a value nests lists or maps deeper than {0} levels")]
    ValueDepth(usize),
    #[error("output exceeds {}", size(*.0))]
    Output(usize),
    #[error("a string exceeds {}", size(*.0))]
    String(usize),
    #[error("a list or map exceeds {0} elements")]
    List(usize),
    #[error("execution time exceeds {0:?}")]
    Time(Duration),
    #[error("a map would contain itself")]
    Cycle,
}

fn size(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

struct Meter {
    budget: RenderBudget,
    deadline: Option<Instant>,
    ticks: u32,
    overrun: Option<Overrun>,
}

thread_local! {
    static METER: RefCell<Option<Meter>> = const { RefCell::new(None) };
}

/// Restores the previous meter (none, normally) when an execution ends.
pub struct Active(Option<Meter>);

impl Drop for Active {
    fn drop(&mut self) {
        let prev = self.0.take();
        METER.with(|m| *m.borrow_mut() = prev);
    }
}

/// Starts metering an execution on this thread.
pub fn start(budget: &RenderBudget) -> Active {
    let meter = Meter {
        budget: *budget,
        deadline: Instant::now().checked_add(budget.max_time),
        ticks: 0,
        overrun: None,
    };
    Active(METER.with(|m| m.borrow_mut().replace(meter)))
}

/// The limits in force (the defaults outside an execution).
pub fn limits() -> RenderBudget {
    METER.with(|m| m.borrow().as_ref().map(|m| m.budget).unwrap_or_default())
}

/// Records an overrun (the first one wins) and returns it.
pub fn trip(o: Overrun) -> Overrun {
    METER.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.overrun.get_or_insert(o);
        }
    });
    o
}

/// The overrun recorded since the execution started, if any.
pub fn overrun() -> Option<Overrun> {
    METER.with(|m| m.borrow().as_ref().and_then(|m| m.overrun))
}

/// Counts one step; every 256 steps compares the clock with the deadline.
pub fn tick() -> Result<(), Overrun> {
    METER.with(|m| {
        let mut m = m.borrow_mut();
        let Some(m) = m.as_mut() else { return Ok(()) };
        if let Some(o) = m.overrun {
            return Err(o);
        }
        m.ticks = m.ticks.wrapping_add(1);
        if m.ticks.is_multiple_of(256)
            && let Some(d) = m.deadline
            && Instant::now() > d
        {
            let o = Overrun::Time(m.budget.max_time);
            m.overrun = Some(o);
            return Err(o);
        }
        Ok(())
    })
}

/// For walks that cannot return an error: counts a step and says whether to stop
/// (the overrun is recorded; the executor reports it after the function returns).
pub fn stop() -> bool {
    tick().is_err()
}

/// A string of `n` bytes may be produced.
pub fn string(n: usize) -> Result<(), Overrun> {
    let max = limits().max_string_bytes;
    if n > max {
        return Err(trip(Overrun::String(max)));
    }
    Ok(())
}

/// A list or map of `n` elements may be produced.
pub fn list(n: usize) -> Result<(), Overrun> {
    let max = limits().max_list_len;
    if n > max {
        return Err(trip(Overrun::List(max)));
    }
    Ok(())
}

/// A walk may descend to value nesting `depth`.
pub fn value_depth(depth: usize) -> Result<(), Overrun> {
    let max = limits().max_value_depth;
    if depth > max {
        return Err(trip(Overrun::ValueDepth(max)));
    }
    Ok(())
}

/// For string builders that cannot return an error: whether `len` bytes are too many
/// (records the overrun).
pub fn string_full(len: usize) -> bool {
    string(len).is_err()
}
