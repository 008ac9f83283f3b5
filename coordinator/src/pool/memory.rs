//! The up-front memory check: a batch whose values would not fit in the
//! memory they may use is refused before any worker is asked for them.
//!
//! Three limits are read, once per check, and only for a batch whose
//! biggest values could need more than [`UNLOOKED_BYTES`] (so a small run
//! reads no /proc or /sys file):
//! - the machine's MemAvailable and what this process's memory cgroup (v1
//!   or v2, with its ancestors) has left: the values computed at once, on
//!   as many workers, share them;
//! - RLIMIT_AS, which every worker inherits: a limit per process, so each
//!   value must fit in it on its own.

use std::fmt;
use std::fs;
use std::path::Path;

use fibpool_protocol::packed::encoded_len_bound;
use fibpool_protocol::{Encoding, MAX_INDEX};

use super::child;
use super::error::PoolError;
use super::tasks::TaskList;

/// A batch whose biggest values need at most this much, computed at once,
/// is taken without a look at memory.
pub(crate) const UNLOOKED_BYTES: u64 = 256 << 20;

/// What bounds the memory a value may use, as [`PoolError::ValueTooBig`]
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// The machine's MemAvailable.
    Available,
    /// What this process's memory cgroup, or one of its ancestors, has
    /// left below its limit (its usage without inactive file pages).
    Cgroup,
    /// RLIMIT_AS, the address space one process (each worker) may map.
    AddressSpace,
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryLimit::Available => "available",
            MemoryLimit::Cgroup => "left in this process's memory cgroup",
            MemoryLimit::AddressSpace => "one process may map (RLIMIT_AS)",
        })
    }
}

/// The limits, as read once.
#[derive(Debug, Clone, Copy, Default)]
struct Room {
    /// The least of MemAvailable and the cgroup's room, shared by the
    /// values computed at once.
    shared: Option<(u64, MemoryLimit)>,
    /// RLIMIT_AS, for each process alone.
    per_process: Option<u64>,
}

impl Room {
    fn now() -> Room {
        let available = child::available_memory_bytes().map(|b| (b, MemoryLimit::Available));
        let cgroup = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| cgroup_room(&text, Path::new("/sys/fs/cgroup")))
            .map(|b| (b, MemoryLimit::Cgroup));
        Room {
            shared: least(available, cgroup),
            per_process: address_space_limit(),
        }
    }

    /// What one value alone may use.
    fn alone(&self) -> Option<(u64, MemoryLimit)> {
        least(
            self.shared,
            self.per_process.map(|b| (b, MemoryLimit::AddressSpace)),
        )
    }
}

/// The memory the processes of this machine and cgroup share now: the
/// least of MemAvailable and what this process's memory cgroup has left.
pub fn shared_memory_bytes() -> Option<u64> {
    Room::now().shared.map(|(bytes, _)| bytes)
}

fn least(
    a: Option<(u64, MemoryLimit)>,
    b: Option<(u64, MemoryLimit)>,
) -> Option<(u64, MemoryLimit)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Refuses a batch with an index no worker computes, a value that would
/// not fit in memory on its own, or biggest values, as many as `workers`
/// computed at once, that would not fit together.
pub fn check_batch(tasks: &TaskList, encoding: Encoding, workers: usize) -> Result<(), PoolError> {
    check_batch_in(tasks, encoding, workers, Room::now)
}

/// [`check_batch`] with the limits `room` reads, once and only if needed.
fn check_batch_in(
    tasks: &TaskList,
    encoding: Encoding,
    workers: usize,
    room: impl Fn() -> Room,
) -> Result<(), PoolError> {
    let Some(index) = tasks.max_index() else {
        return Ok(());
    };
    check_range(index)?;
    let Some((index, need, at_once)) = batch_need(tasks, encoding, workers) else {
        return Ok(());
    };
    if need <= UNLOOKED_BYTES {
        return Ok(());
    }
    let room = room();
    fits(index, value_memory_bound(index, encoding), 1, room.alone())?;
    if at_once > 1 {
        fits(index, need, at_once, room.shared)?;
    }
    Ok(())
}

/// What a value held for a [`Future`](super::Future) takes, at most: its
/// bytes as they came and as the [`BigUint`](num_bigint::BigUint) they
/// become when the result is taken, each with its vector's header and its
/// allocation's overhead, and a few bytes of rounding.
fn held_bytes(index: u64) -> u64 {
    encoded_len_bound(index, Encoding::Raw)
        .saturating_mul(2)
        .saturating_add(80)
}

/// Refuses a batch whose values, held together until a [`Future`]'s
/// result is taken, would not fit in the memory this process may use, as
/// well as what [`check_batch`] refuses.
///
/// [`Future`]: super::Future
pub fn check_held(tasks: &TaskList, workers: usize) -> Result<(), PoolError> {
    check_held_in(tasks, workers, Room::now)
}

fn check_held_in(
    tasks: &TaskList,
    workers: usize,
    room: impl Fn() -> Room,
) -> Result<(), PoolError> {
    check_batch_in(tasks, Encoding::Raw, workers, &room)?;
    let need = tasks.sum_over(held_bytes);
    if need <= UNLOOKED_BYTES {
        return Ok(());
    }
    match room().alone() {
        Some((available, limit)) if need > available => Err(PoolError::BatchTooBig {
            values: tasks.len(),
            need,
            available,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The batch's `workers` biggest values: the largest index, what they
/// need together, and how many they are.
fn batch_need(tasks: &TaskList, encoding: Encoding, workers: usize) -> Option<(u64, u64, u64)> {
    let big = tasks.largest_above(0, workers.max(1));
    let need = big
        .iter()
        .map(|&n| value_memory_bound(n, encoding))
        .fold(0, u64::saturating_add);
    Some((*big.first()?, need, big.len() as u64))
}

/// Refuses an index no worker computes, or one whose value would not fit
/// in memory on its own (the least of MemAvailable, the cgroup's room and
/// RLIMIT_AS). Only a value that may need more than 256 MiB is
/// looked at.
pub fn check_index(index: u64, encoding: Encoding) -> Result<(), PoolError> {
    check_range(index)?;
    let need = value_memory_bound(index, encoding);
    if need <= UNLOOKED_BYTES {
        return Ok(());
    }
    fits(index, need, 1, Room::now().alone())
}

fn check_range(index: u64) -> Result<(), PoolError> {
    if index > MAX_INDEX {
        return Err(PoolError::IndexTooLarge {
            index,
            max: MAX_INDEX,
        });
    }
    Ok(())
}

fn fits(
    index: u64,
    need: u64,
    at_once: u64,
    room: Option<(u64, MemoryLimit)>,
) -> Result<(), PoolError> {
    match room {
        Some((available, limit)) if need > available => Err(PoolError::ValueTooBig {
            index,
            need,
            available,
            at_once,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The largest index whose value [`check_index`] takes without a look at
/// memory.
pub(crate) fn unchecked_limit(encoding: Encoding) -> u64 {
    last_index_where(|n| value_memory_bound(n, encoding) <= UNLOOKED_BYTES)
}

/// The largest index whose value fits, on its own, what memory allows now
/// (at least [`unchecked_limit`]).
pub(crate) fn affordable_limit(encoding: Encoding) -> u64 {
    let Some((memory, _)) = Room::now().alone() else {
        return MAX_INDEX;
    };
    let fits = last_index_where(|n| value_memory_bound(n, encoding) <= memory);
    fits.max(unchecked_limit(encoding))
}

/// The largest n up to [`MAX_INDEX`] for which `holds`, which must hold
/// for 0 and, once false, stay false.
fn last_index_where(holds: impl Fn(u64) -> bool) -> u64 {
    let (mut yes, mut no) = (0, MAX_INDEX + 1);
    if holds(MAX_INDEX) {
        return MAX_INDEX;
    }
    while no - yes > 1 {
        let mid = yes + (no - yes) / 2;
        if holds(mid) { yes = mid } else { no = mid }
    }
    yes
}

/// This process's address-space limit (RLIMIT_AS), which its workers
/// inherit, if it has one.
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What the memory cgroups named in `proc_self_cgroup` (the text of
/// /proc/self/cgroup) have left, the least over a v2 cgroup and its
/// ancestors, or a v1 one (whose `hierarchical_memory_limit` already
/// holds its ancestors'), under the hierarchy mounted at `root`. `None`
/// when no limit is set or none can be read.
fn cgroup_room(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut room = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // A path outside this namespace's view ("/../..") names no
        // directory of ours.
        let path = path.trim_start_matches('/');
        if path.split('/').any(|part| part == "..") {
            continue;
        }
        let this = if controllers.is_empty() {
            v2_room(root, &seen(root, path))
        } else if controllers.split(',').any(|c| c == "memory") {
            let mount = root.join("memory");
            v1_room(&mount.join(seen(&mount, path)))
        } else {
            continue;
        };
        room = match (room, this) {
            (Some(a), Some(b)) => Some(u64::min(a, b)),
            (a, b) => a.or(b),
        };
    }
    room
}

/// Where the cgroup at `path` (as /proc/self/cgroup names it, from its
/// hierarchy's root) is under `mount`. A container without a cgroup
/// namespace sees its own cgroup mounted as the root while its
/// /proc/self/cgroup still names the host's path ("/docker/abc"): the
/// path loses its leading parts until it names a directory, the mount
/// itself at last.
fn seen(mount: &Path, path: &str) -> String {
    let mut path = path;
    loop {
        if path.is_empty() || mount.join(path).is_dir() {
            return path.to_owned();
        }
        path = path.split_once('/').map_or("", |(_, rest)| rest);
    }
}

/// A v2 cgroup's room: the least, over it and its ancestors, of
/// `memory.max` less what is in use (`memory.current` without
/// `inactive_file`, which the kernel reclaims first).
fn v2_room(root: &Path, path: &str) -> Option<u64> {
    let mut room = None;
    let mut dir = root.join(path);
    loop {
        let max = fs::read_to_string(dir.join("memory.max")).ok();
        if let Some(max) = max.and_then(|m| m.trim().parse::<u64>().ok()) {
            let current = read_number(&dir.join("memory.current")).unwrap_or(0);
            let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            let this = max.saturating_sub(current.saturating_sub(inactive));
            room = Some(room.map_or(this, |r: u64| r.min(this)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return room;
        }
    }
}

/// A v1 cgroup's room: `hierarchical_memory_limit` less what is in use
/// (`memory.usage_in_bytes` without `total_inactive_file`).
fn v1_room(dir: &Path) -> Option<u64> {
    let stat = dir.join("memory.stat");
    let limit = stat_field(&stat, "hierarchical_memory_limit")?;
    // No limit reads as about 2^63, rounded down to a page.
    if limit >= 1 << 62 {
        return None;
    }
    let usage = read_number(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(inactive)))
}

fn read_number(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// A "key N" line of a memory.stat file.
fn stat_field(file: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// About the most memory computing F(`index`) in `encoding` takes: the
/// worker's arithmetic, 12 times the value's raw size (F(3x10^8), 26 MB raw,
/// peaked at 313 MB in its worker), and the encoded value twice (the
/// worker's copy and the pool's).
pub fn value_memory_bound(index: u64, encoding: Encoding) -> u64 {
    let raw = encoded_len_bound(index, Encoding::Raw);
    let encoded = encoded_len_bound(index, encoding);
    raw.saturating_mul(12)
        .saturating_add(encoded.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_index_where_a_bound_holds_is_found_exactly() {
        assert_eq!(last_index_where(|n| n <= 12_345), 12_345);
        assert_eq!(last_index_where(|_| true), MAX_INDEX);
        assert_eq!(last_index_where(|n| n == 0), 0);
        // The values check_index takes without a look at memory: those
        // that need at most UNLOOKED_BYTES, and not one index more.
        let limit = unchecked_limit(Encoding::Raw);
        assert!(value_memory_bound(limit, Encoding::Raw) <= UNLOOKED_BYTES);
        assert!(value_memory_bound(limit + 1, Encoding::Raw) > UNLOOKED_BYTES);
        assert!(unchecked_limit(Encoding::Decimal) < limit);
        assert!(check_index(limit, Encoding::Raw).is_ok());
        assert!(affordable_limit(Encoding::Raw) >= limit);
    }

    #[test]
    fn a_batch_needs_the_memory_of_its_biggest_values_computed_at_once() {
        let limit = unchecked_limit(Encoding::Raw);
        let (a, b) = (limit / 2, limit + 1000);
        let bound = |n| value_memory_bound(n, Encoding::Raw);
        let tasks: TaskList = [5, a, 7, b].into_iter().collect();
        assert_eq!(
            batch_need(&tasks, Encoding::Raw, 2),
            Some((b, bound(a) + bound(b), 2)),
            "a value under the unlooked limit counts beside a bigger one"
        );
        assert_eq!(batch_need(&tasks, Encoding::Raw, 1), Some((b, bound(b), 1)));
        assert_eq!(
            batch_need(&tasks, Encoding::Raw, 8),
            Some((b, bound(a) + bound(b) + bound(7) + bound(5), 4)),
        );
        let empty: TaskList = std::iter::empty().collect();
        assert_eq!(batch_need(&empty, Encoding::Raw, 2), None);
    }

    /// A scratch directory holding `files` (path, contents).
    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("fibpool-cgroup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, contents) in files {
            let file = root.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, contents).unwrap();
        }
        root
    }

    #[test]
    fn a_v2_cgroup_has_the_least_room_of_it_and_its_ancestors() {
        let root = tree(
            "v2",
            &[
                ("a/memory.max", "1000000\n"),
                ("a/memory.current", "400000\n"),
                ("a/memory.stat", "anon 300000\ninactive_file 100000\n"),
                ("a/b/memory.max", "max\n"),
                ("a/b/memory.current", "50\n"),
                ("a/b/c/memory.max", "900000\n"),
                ("a/b/c/memory.current", "100000\n"),
            ],
        );
        // a: 1000000 - (400000 - 100000); c: 900000 - 100000.
        assert_eq!(cgroup_room("0::/a/b/c\n", &root), Some(700_000));
        assert_eq!(cgroup_room("0::/a/b\n", &root), Some(700_000));
        assert_eq!(cgroup_room("0::/\n", &root), None, "no limit at the root");
        assert_eq!(cgroup_room("0::/../x\n", &root), None, "outside the view");
        // A container's own cgroup, mounted as the root, under the host's
        // name for it.
        assert_eq!(cgroup_room("0::/docker/a/b/c\n", &root), Some(700_000));
        assert_eq!(cgroup_room("0::/nowhere\n", &root), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_v1_memory_cgroup_has_its_hierarchical_limit_less_its_usage() {
        let root = tree(
            "v1",
            &[
                (
                    "memory/box/memory.stat",
                    "cache 5\nhierarchical_memory_limit 4294967296\ntotal_inactive_file 1000\n",
                ),
                ("memory/box/memory.usage_in_bytes", "1001000\n"),
                (
                    "memory/free/memory.stat",
                    "hierarchical_memory_limit 9223372036854771712\n",
                ),
                ("memory/free/memory.usage_in_bytes", "5\n"),
            ],
        );
        let text = "5:cpu,cpuacct:/box\n4:memory:/box\n0::/\n";
        assert_eq!(cgroup_room(text, &root), Some(4_294_967_296 - 1_000_000));
        assert_eq!(cgroup_room("4:memory:/free\n", &root), None, "unlimited");
        assert_eq!(
            cgroup_room("5:cpu:/box\n", &root),
            None,
            "not the memory controller"
        );
        assert_eq!(cgroup_room("garbage\n\n4:memory\n", &root), None);
        // A v1 container without a cgroup namespace: its cgroup is the
        // mount's root, named by the host's path. Old failure: None (only
        // MemAvailable, the host's memory, counted).
        let container = tree(
            "v1-container",
            &[
                (
                    "memory/memory.stat",
                    "hierarchical_memory_limit 1073741824\n",
                ),
                ("memory/memory.usage_in_bytes", "73741824\n"),
            ],
        );
        assert_eq!(
            cgroup_room("4:memory:/docker/abc\n", &container),
            Some(1_000_000_000)
        );
        fs::remove_dir_all(&container).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn values_at_once_share_the_machine_and_its_cgroup_but_not_rlimit_as() {
        let limit = unchecked_limit(Encoding::Raw);
        let (a, b) = (limit + 1, limit + 2);
        let both = value_memory_bound(a, Encoding::Raw) + value_memory_bound(b, Encoding::Raw);
        let alone = value_memory_bound(b, Encoding::Raw);
        let tasks: TaskList = [a, b].into_iter().collect();
        let check = |workers, room: Room| check_batch_in(&tasks, Encoding::Raw, workers, || room);
        let per_process = |bytes| Room {
            shared: None,
            per_process: Some(bytes),
        };
        let shared = |bytes, limit| Room {
            shared: Some((bytes, limit)),
            per_process: None,
        };
        // Each fits a process's address space: the workers are two processes.
        assert!(check(2, per_process(both - 1)).is_ok());
        match check(2, per_process(alone - 1)) {
            Err(PoolError::ValueTooBig {
                index,
                at_once: 1,
                limit: MemoryLimit::AddressSpace,
                ..
            }) => assert_eq!(index, b),
            other => panic!("{other:?}"),
        }
        for limit in [MemoryLimit::Available, MemoryLimit::Cgroup] {
            match check(2, shared(both - 1, limit)) {
                Err(PoolError::ValueTooBig {
                    index,
                    need,
                    at_once: 2,
                    limit: named,
                    ..
                }) => assert_eq!((index, need, named), (b, both, limit)),
                other => panic!("{other:?}"),
            }
            assert!(check(2, shared(both, limit)).is_ok());
            assert!(check(1, shared(both - 1, limit)).is_ok(), "one at a time");
        }
        // A batch that needs little is taken without reading any limit.
        let small: TaskList = [5, 90].into_iter().collect();
        let unread = || -> Room { panic!("limits read for a small batch") };
        assert!(check_batch_in(&small, Encoding::Raw, 2, unread).is_ok());
        let past: TaskList = [MAX_INDEX + 1].into_iter().collect();
        assert!(matches!(
            check_batch_in(&past, Encoding::Raw, 2, unread),
            Err(PoolError::IndexTooLarge { .. })
        ));
    }

    #[test]
    fn a_future_holds_every_value_of_its_batch_until_taken() {
        let room = |bytes| Room {
            shared: Some((bytes, MemoryLimit::Available)),
            per_process: Some(bytes),
        };
        // F(0..250000), about 2.7 GB raw: each value is small, but a Future
        // holds them all. Old failure: only the biggest were counted, and
        // the process aborted when an allocation failed.
        let range: TaskList = std::iter::once(0).chain(1..250_000).collect();
        let held = range.sum_over(held_bytes);
        let exact: u64 = (0..250_000).map(held_bytes).sum();
        assert!(
            held >= exact && held - exact <= 250_000 * 8,
            "{held} against {exact}"
        );
        assert!(held > 5_000_000_000, "{held}");
        match check_held_in(&range, 2, || room(2_000_000_000)) {
            Err(PoolError::BatchTooBig {
                values: 250_000,
                need,
                available: 2_000_000_000,
                limit: MemoryLimit::Available,
            }) => assert_eq!(need, held),
            other => panic!("{other:?}"),
        }
        assert!(check_held_in(&range, 2, || room(held)).is_ok());
        // A billion copies of F(5): 82 bytes each, 88 GB in all.
        let mut copies = TaskList::new();
        copies.push_repeat(5, 1 << 30);
        let err = check_held_in(&copies, 2, || room(24 << 30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the batch's 1073741824 values would need about 88.05 GB of memory to hold until \
             their result is taken, more than the 25.77 GB available"
        );
        // Small batches read no limit.
        let small: TaskList = (0..1000).collect();
        let unread = || -> Room { panic!("limits read for a small batch") };
        assert!(check_held_in(&small, 2, unread).is_ok());
    }

    #[test]
    fn the_least_room_names_its_limit() {
        let room = Room {
            shared: Some((10, MemoryLimit::Cgroup)),
            per_process: Some(5),
        };
        assert_eq!(room.alone(), Some((5, MemoryLimit::AddressSpace)));
        let room = Room {
            shared: Some((10, MemoryLimit::Available)),
            per_process: None,
        };
        assert_eq!(room.alone(), Some((10, MemoryLimit::Available)));
        assert_eq!(Room::default().alone(), None);
        let refused = fits(9, 11, 2, Some((10, MemoryLimit::Cgroup))).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "F(9) and the next biggest value, computed at once on two workers, would need \
             about 0.00 GB of memory to compute and hold, more than the 0.00 GB left in this \
             process's memory cgroup"
        );
        assert!(fits(9, 10, 2, Some((10, MemoryLimit::Cgroup))).is_ok());
        assert!(fits(9, 10, 2, None).is_ok());
    }
}
