//! An HNSW graph (Malkov & Yashunin, 2018) for maximum inner product, laid out like hnswlib:
//! base-layer links of every node in one flat array, vectors in another, dense node ids (our
//! item indices, so no key map), a visited-tag pool instead of hash sets, hnswlib's neighbour
//! heuristic. Written here because on the same vectors it measured faster than usearch and
//! hnsw_rs, and than hnswlib itself (see ARCHITECTURE.md and docs/benchmarks.md), in safe Rust.
//! One file because it is one data structure: the link layout, the int8 codes, the visited
//! bitset and the overlapped loads are invariants that every build and search function shares.
//!
//! Queries walk the graph on int8 codes of the vectors (one cache line per 64 dimensions, a
//! scale per vector) and re-score the final beam with the stored vectors, so results carry
//! stored-precision scores; links are built on the stored vectors. Each expansion first loads
//! one word of every unvisited neighbour's code, then computes their distances: the cache
//! misses overlap, which is what a prefetch instruction would do (safe Rust has none).
//!
//! Concurrency: searches and link updates run together. Links are atomics written under a
//! per-node stripe lock (readers take no lock, like hnswlib); vectors sit behind an `RwLock`
//! whose write side is taken only for the few hundred nanoseconds of copying a new vector in.
//! Deleted nodes stay in the graph for routing and never appear in results.

use parking_lot::{Mutex, RwLock};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const DELETED: u8 = 2;
const MAX_LEVEL: usize = 16;
const LOCK_STRIPES: usize = 4096;
const MAGIC: &[u8; 8] = b"CSCHNSW1";

/// How a vector is stored. Distances are computed in the stored precision by numkong's
/// kernels (picked at run time for this CPU: AVX2, AVX-512, AVX-512 FP16 ...), with the query
/// converted once per search; sums accumulate in f32 or wider.
pub trait Elem: Copy + Default + Send + Sync + 'static {
    const KIND: u8;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_bits(self) -> u32;
    fn from_bits(b: u32) -> Self;
    fn dot(a: &[Self], b: &[Self]) -> f32;
}

impl Elem for f32 {
    const KIND: u8 = 32;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn to_bits(self) -> u32 {
        f32::to_bits(self)
    }
    fn from_bits(b: u32) -> Self {
        f32::from_bits(b)
    }
    /// Our own eight-lane loop: numkong's f32 kernel accumulates in f64, which measured
    /// slower here.
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> f32 {
        crate::als::dot(a, b)
    }
}

/// Half precision as numkong stores it.
pub type F16 = numkong::f16;

impl Elem for F16 {
    const KIND: u8 = 16;
    fn from_f32(x: f32) -> Self {
        numkong::f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        numkong::f16::to_f32(self)
    }
    fn to_bits(self) -> u32 {
        u32::from(self.0)
    }
    fn from_bits(b: u32) -> Self {
        numkong::f16(b as u16)
    }
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> f32 {
        <numkong::f16 as numkong::Dot>::dot(a, b).unwrap_or(0.0)
    }
}

/// One cache line of a node's int8 navigation code; a code is `dim.div_ceil(64)` lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

impl Default for Line {
    fn default() -> Self {
        Line([0; 64])
    }
}

/// Writes `v` scaled to ±127 by its largest component into `out` (zero-padded), returning
/// the scale that maps the code back (0 for a zero vector).
fn encode(v: &[f32], out: &mut [Line]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    out.iter_mut().for_each(|l| *l = Line::default());
    if !(max > 0.0 && max.is_finite()) {
        return 0.0;
    }
    let inv = 127.0 / max;
    for (l, chunk) in out.iter_mut().zip(v.chunks(64)) {
        for (c, &x) in l.0.iter_mut().zip(chunk) {
            *c = (x * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
    max / 127.0
}

/// The integer inner product of two codes (numkong's dispatched kernel: VNNI where present).
#[inline]
fn code_dot(a: &[Line], b: &[Line]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| <i8 as numkong::Dot>::dot(&x.0, &y.0).unwrap_or(0))
        .sum()
}

/// Distances from one query to nodes, as a walk needs them.
trait Metric {
    fn dist(&self, n: u32) -> f32;
    /// Reads one word of what [`Metric::dist`] will read for `n`. Safe Rust has no prefetch
    /// instruction; a plain load of each neighbour's row, issued for all of them before any
    /// distance is computed, lets their cache misses overlap instead of following each other.
    fn touch(&self, n: u32) -> u32;
}

/// Stored-precision distances (building links).
struct Exact<'a, E: Elem> {
    vecs: &'a [E],
    q: &'a [E],
    dim: usize,
}

impl<E: Elem> Metric for Exact<'_, E> {
    #[inline]
    fn dist(&self, n: u32) -> f32 {
        let i = n as usize * self.dim;
        -E::dot(self.q, &self.vecs[i..i + self.dim])
    }
    /// First and last component: a row of 64 halves spans two or three cache lines.
    #[inline]
    fn touch(&self, n: u32) -> u32 {
        let i = n as usize * self.dim;
        self.vecs[i].to_bits() ^ self.vecs[i + self.dim - 1].to_bits()
    }
}

/// Int8-code distances (queries): one cache line per 64 dimensions and an integer kernel.
struct Nav<'a> {
    codes: &'a [Line],
    scales: &'a [f32],
    q: &'a [Line],
}

impl Metric for Nav<'_> {
    #[inline]
    fn dist(&self, n: u32) -> f32 {
        let (i, l) = (n as usize, self.q.len());
        -(self.scales[i] * code_dot(self.q, &self.codes[i * l..(i + 1) * l]) as f32)
    }
    #[inline]
    fn touch(&self, n: u32) -> u32 {
        let i = n as usize;
        self.codes[i * self.q.len()].0[0] as u32 ^ self.scales[i].to_bits()
    }
}

/// The vectors in stored precision, and their int8 codes that steer query-time walks.
struct Rows<E> {
    vecs: Vec<E>,
    codes: Vec<Line>,
    /// Per node: the code's scale (largest |component| / 127).
    scales: Vec<f32>,
}

/// A node and its distance (negated inner product: smaller is closer).
#[derive(Debug, Clone, Copy)]
struct Cand {
    d: f32,
    n: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.n.cmp(&o.n))
    }
}

/// Visited marks for one search: one bit per node (an eighth of a megabyte per million
/// nodes, so the marks stay in the core's L2 cache), cleared word by word after each search
/// from the list of nodes it marked.
struct Visited {
    bits: Vec<u64>,
    marked: Vec<u32>,
}

impl Visited {
    fn new(n: usize) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64)],
            marked: Vec::new(),
        }
    }

    fn next(&mut self) {
        for &n in &self.marked {
            if let Some(w) = self.bits.get_mut(n as usize >> 6) {
                *w = 0;
            }
        }
        self.marked.clear();
    }

    /// Sets `n`'s bit; true if it was clear (false for an id beyond the graph).
    #[inline]
    fn test_and_set(&mut self, n: u32) -> bool {
        let Some(w) = self.bits.get_mut(n as usize >> 6) else {
            return false;
        };
        let bit = 1u64 << (n & 63);
        let fresh = *w & bit == 0;
        *w |= bit;
        fresh
    }

    /// Marks `n`; true if it was not yet visited in this search.
    #[inline]
    fn visit(&mut self, n: u32) -> bool {
        let fresh = self.test_and_set(n);
        if fresh {
            self.marked.push(n);
        }
        fresh
    }

    /// Keeps the ids of `nb` not yet visited and marks them all, with no branch per id (a
    /// mispredicted branch would wait for each mark's load in turn).
    #[inline]
    fn keep_unvisited(&mut self, nb: &mut Vec<u32>) {
        let mut k = 0;
        for i in 0..nb.len() {
            let n = nb[i];
            let fresh = self.test_and_set(n);
            nb[k] = n;
            k += usize::from(fresh);
        }
        nb.truncate(k);
        self.marked.extend_from_slice(nb);
    }
}

/// Per-search scratch: visited marks, heaps and the query in stored precision, pooled.
struct Scratch<E> {
    visited: Visited,
    top: BinaryHeap<Cand>,
    cands: BinaryHeap<Reverse<Cand>>,
    query: Vec<E>,
    qcode: Vec<Line>,
    dists: Vec<f32>,
}

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub dim: usize,
    /// Links per node on upper layers; the base layer keeps `2·m`.
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HnswError {
    #[error("node {0} is beyond the index capacity {1}")]
    Full(u32, usize),
    #[error("vector has {got} dimensions, index has {want}")]
    Dimensions { got: usize, want: usize },
    #[error("index file: {0}")]
    Io(#[from] std::io::Error),
    #[error("index file: {0}")]
    Format(String),
}

/// The graph over vectors of element type `E`; node ids are `0..capacity`.
pub struct Graph<E: Elem> {
    p: Params,
    m0: usize,
    cap: usize,
    mult: f64,
    ef_search: AtomicUsize,
    /// Code lines per node.
    lines: usize,
    vectors: RwLock<Rows<E>>,
    /// Per node: `[count, 2m links]`.
    links0: Vec<AtomicU32>,
    /// Per node with level ≥ 1: `level × [count, m links]`.
    upper: Vec<OnceLock<Box<[AtomicU32]>>>,
    levels: Vec<AtomicU8>,
    state: Vec<AtomicU8>,
    locks: Vec<Mutex<()>>,
    /// `(level + 1) << 32 | node`, 0 while empty.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    live: AtomicUsize,
    /// Nodes ever deleted (never decremented: a re-linked node may still be routed to).
    deleted: AtomicUsize,
    pool: Mutex<Vec<Scratch<E>>>,
}

impl<E: Elem> std::fmt::Debug for Graph<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("params", &self.p)
            .field("capacity", &self.cap)
            .field("live", &self.len())
            .finish()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<E: Elem> Graph<E> {
    pub fn new(p: Params, cap: usize) -> Self {
        let m = p.m.max(2);
        let p = Params { m, ..p };
        let m0 = 2 * m;
        Self {
            p,
            m0,
            cap,
            mult: 1.0 / (m as f64).ln(),
            ef_search: AtomicUsize::new(p.ef_search.max(1)),
            lines: p.dim.div_ceil(64),
            vectors: RwLock::new(Rows {
                vecs: vec![E::default(); cap * p.dim],
                codes: vec![Line::default(); cap * p.dim.div_ceil(64)],
                scales: vec![0.0; cap],
            }),
            links0: (0..cap * (1 + m0)).map(|_| AtomicU32::new(0)).collect(),
            upper: (0..cap).map(|_| OnceLock::new()).collect(),
            levels: (0..cap).map(|_| AtomicU8::new(0)).collect(),
            state: (0..cap).map(|_| AtomicU8::new(EMPTY)).collect(),
            locks: (0..LOCK_STRIPES.min(cap.max(1)))
                .map(|_| Mutex::new(()))
                .collect(),
            entry: AtomicU64::new(0),
            entry_lock: Mutex::new(()),
            live: AtomicUsize::new(0),
            deleted: AtomicUsize::new(0),
            pool: Mutex::new(Vec::new()),
        }
    }

    pub fn params(&self) -> Params {
        Params {
            ef_search: self.ef_search.load(Relaxed),
            ..self.p
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Live (searchable) nodes.
    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, n: u32) -> bool {
        self.state
            .get(n as usize)
            .is_some_and(|s| s.load(Acquire) == LIVE)
    }

    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(1), Relaxed);
    }

    /// Heap bytes held: vectors, links, per-node state, and pooled scratch.
    pub fn memory_bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            .filter_map(|u| u.get().map(|b| b.len() * 4))
            .sum();
        self.cap * self.p.dim * std::mem::size_of::<E>()
            + self.cap * (self.lines * 64 + 4)
            + self.links0.len() * 4
            + upper
            + self.upper.len() * std::mem::size_of::<OnceLock<Box<[AtomicU32]>>>()
            + self.cap * 2
            + self.locks.len() * std::mem::size_of::<Mutex<()>>()
            + self.pool.lock().len() * self.cap.div_ceil(64) * 8
    }

    fn lock(&self, n: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[n as usize % self.locks.len()].lock()
    }

    /// The link words of `n` at `level`: `[count, ids...]`.
    #[inline]
    fn links(&self, n: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let w = 1 + self.m0;
            &self.links0[n as usize * w..(n as usize + 1) * w]
        } else {
            let w = 1 + self.p.m;
            match self.upper[n as usize].get() {
                Some(b) if b.len() >= level * w => &b[(level - 1) * w..level * w],
                _ => &[],
            }
        }
    }

    fn neighbours(&self, n: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let l = self.links(n, level);
        if let Some((count, ids)) = l.split_first() {
            let c = (count.load(Acquire) as usize).min(ids.len());
            out.extend(ids[..c].iter().map(|x| x.load(Relaxed)));
        }
    }

    fn set_links(&self, n: u32, level: usize, ids: &[u32]) {
        let l = self.links(n, level);
        if let Some((count, slots)) = l.split_first() {
            let c = ids.len().min(slots.len());
            for (s, &id) in slots.iter().zip(&ids[..c]) {
                s.store(id, Relaxed);
            }
            count.store(c as u32, Release);
        }
    }

    fn scratch(&self) -> Scratch<E> {
        self.pool.lock().pop().unwrap_or_else(|| Scratch {
            visited: Visited::new(self.cap),
            top: BinaryHeap::new(),
            cands: BinaryHeap::new(),
            query: Vec::with_capacity(self.p.dim),
            qcode: Vec::with_capacity(self.lines),
            dists: Vec::with_capacity(self.m0),
        })
    }

    fn give_back(&self, s: Scratch<E>) {
        self.pool.lock().push(s);
    }

    #[inline]
    fn row<'v>(&self, vecs: &'v [E], n: u32) -> &'v [E] {
        let d = self.p.dim;
        &vecs[n as usize * d..(n as usize + 1) * d]
    }

    fn level_of(&self, n: u32) -> usize {
        let u = (splitmix(u64::from(n) ^ 0x5eed) >> 11) as f64 / (1u64 << 53) as f64;
        ((-(u.max(f64::MIN_POSITIVE)).ln() * self.mult) as usize).min(MAX_LEVEL)
    }

    /// Greedy descent from `cur` through the layers above `to_level`.
    fn descend(
        &self,
        m: &impl Metric,
        mut cur: Cand,
        from_level: usize,
        to_level: usize,
        nb: &mut Vec<u32>,
    ) -> Cand {
        for level in (to_level + 1..=from_level).rev() {
            loop {
                let mut changed = false;
                self.neighbours(cur.n, level, nb);
                let sink = nb.iter().fold(0, |a, &n| a ^ m.touch(n));
                for &n in nb.iter() {
                    let d = m.dist(n);
                    if d < cur.d {
                        cur = Cand { d, n };
                        changed = true;
                    }
                }
                std::hint::black_box(sink);
                if !changed {
                    break;
                }
            }
        }
        cur
    }

    /// Best-first search of one layer from `ep`, keeping `ef` results in `s.top` (worst on
    /// top). Deleted nodes are walked through but kept out of the results when `live_only`.
    #[allow(clippy::too_many_arguments)] // the hot loop's inputs, kept as plain arguments
    fn search_layer(
        &self,
        m: &impl Metric,
        ep: Cand,
        ef: usize,
        level: usize,
        live_only: bool,
        s: &mut Scratch<E>,
        nb: &mut Vec<u32>,
    ) {
        s.visited.next();
        s.top.clear();
        s.cands.clear();
        s.visited.visit(ep.n);
        // The state array is only read when something was ever deleted (one less cache miss
        // per result candidate otherwise).
        let check = live_only && self.deleted.load(Relaxed) > 0;
        let ok = |n: u32| !check || self.state[n as usize].load(Relaxed) == LIVE;
        if ok(ep.n) {
            s.top.push(ep);
        }
        s.cands.push(Reverse(ep));
        let mut bound = if s.top.is_empty() {
            f32::INFINITY
        } else {
            ep.d
        };
        while let Some(Reverse(c)) = s.cands.pop() {
            if c.d > bound && s.top.len() >= ef {
                break;
            }
            self.neighbours(c.n, level, nb);
            // Unvisited neighbours first, then all their distances in one branch-free pass
            // (the vector fetches overlap), then the heap updates.
            s.visited.keep_unvisited(nb);
            let mut sink = nb.iter().fold(0, |a, &n| a ^ m.touch(n));
            // Likewise the best waiting candidate's links: often the next one expanded.
            if let Some(Reverse(next)) = s.cands.peek() {
                sink ^= self.links0[next.n as usize * (1 + self.m0)].load(Relaxed);
            }
            s.dists.clear();
            s.dists.extend(nb.iter().map(|&n| m.dist(n)));
            std::hint::black_box(sink);
            for (&n, &d) in nb.iter().zip(&s.dists) {
                if s.top.len() < ef || d < bound {
                    s.cands.push(Reverse(Cand { d, n }));
                    if ok(n) {
                        s.top.push(Cand { d, n });
                        if s.top.len() > ef {
                            s.top.pop();
                        }
                    }
                    if let Some(w) = s.top.peek() {
                        bound = w.d;
                    }
                }
            }
        }
    }

    /// hnswlib's neighbour heuristic: walk candidates nearest first and keep one unless an
    /// already kept neighbour is closer to it than the base point is (keeps links diverse).
    fn select(&self, vecs: &[E], sorted: &[Cand], m: usize) -> Vec<u32> {
        if sorted.len() <= m {
            return sorted.iter().map(|c| c.n).collect();
        }
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let v = self.row(vecs, c.n);
            if kept.iter().all(|&r| -E::dot(v, self.row(vecs, r)) >= c.d) {
                kept.push(c.n);
            }
        }
        kept
    }

    /// Copies `v` in as node `n`'s vector (the only write-locked step).
    fn write_vector(&self, n: u32, v: &[f32]) -> Result<(), HnswError> {
        if v.len() != self.p.dim {
            return Err(HnswError::Dimensions {
                got: v.len(),
                want: self.p.dim,
            });
        }
        if n as usize >= self.cap {
            return Err(HnswError::Full(n, self.cap));
        }
        self.store_row(&mut self.vectors.write(), n, v);
        Ok(())
    }

    /// Writes node `n`'s vector and code (`n` in range, `v` of `dim` components).
    fn store_row(&self, rows: &mut Rows<E>, n: u32, v: &[f32]) {
        let (d, l, i) = (self.p.dim, self.lines, n as usize);
        for (x, &y) in rows.vecs[i * d..(i + 1) * d].iter_mut().zip(v) {
            *x = E::from_f32(y);
        }
        rows.scales[i] = encode(v, &mut rows.codes[i * l..(i + 1) * l]);
    }

    /// Links node `n` (vector already written) into the graph, or re-links it after its
    /// vector changed; then makes it searchable.
    fn link(&self, n: u32) {
        let level = self.level_of(n);
        if level > 0 {
            let _ = self.upper[n as usize].get_or_init(|| {
                (0..level * (1 + self.p.m))
                    .map(|_| AtomicU32::new(0))
                    .collect()
            });
        }
        self.levels[n as usize].store(level as u8, Relaxed);
        let rows = self.vectors.read();
        let vecs = &rows.vecs[..];
        let q: Vec<E> = self.row(vecs, n).to_vec();
        // Links are chosen by the stored vectors, not the coarser codes.
        let exact = Exact {
            vecs,
            q: &q,
            dim: self.p.dim,
        };
        let e = self.entry.load(Acquire);
        if e == 0 {
            let _g = self.entry_lock.lock();
            if self.entry.load(Acquire) == 0 {
                self.entry
                    .store(((level as u64 + 1) << 32) | u64::from(n), Release);
                self.make_live(n);
                return;
            }
        }
        let e = self.entry.load(Acquire);
        let (ep, max_level) = ((e & 0xffff_ffff) as u32, ((e >> 32) - 1) as usize);
        let mut s = self.scratch();
        let mut nb = Vec::with_capacity(self.m0);
        let mut cur = Cand {
            d: exact.dist(ep),
            n: ep,
        };
        if ep != n {
            cur = self.descend(&exact, cur, max_level, level, &mut nb);
            for lv in (0..=level.min(max_level)).rev() {
                self.search_layer(
                    &exact,
                    cur,
                    self.p.ef_construction,
                    lv,
                    false,
                    &mut s,
                    &mut nb,
                );
                let mut found: Vec<Cand> = std::mem::take(&mut s.top)
                    .into_sorted_vec()
                    .into_iter()
                    .filter(|c| c.n != n)
                    .collect();
                if found.is_empty() {
                    continue;
                }
                let chosen = self.select(vecs, &found, self.p.m);
                {
                    let _g = self.lock(n);
                    self.set_links(n, lv, &chosen);
                }
                let max_links = if lv == 0 { self.m0 } else { self.p.m };
                for &other in &chosen {
                    self.connect(vecs, other, n, lv, max_links, &mut nb);
                }
                cur = found.swap_remove(0);
            }
        }
        self.give_back(s);
        self.make_live(n);
        if level > max_level {
            let _g = self.entry_lock.lock();
            let e = self.entry.load(Acquire);
            if e == 0 || level > ((e >> 32) - 1) as usize {
                self.entry
                    .store(((level as u64 + 1) << 32) | u64::from(n), Release);
            }
        }
    }

    /// Adds the link `from → to` at `level`, shrinking `from`'s list by the heuristic when full.
    fn connect(
        &self,
        vecs: &[E],
        from: u32,
        to: u32,
        level: usize,
        max_links: usize,
        nb: &mut Vec<u32>,
    ) {
        let _g = self.lock(from);
        self.neighbours(from, level, nb);
        if nb.contains(&to) {
            return;
        }
        if nb.len() < max_links {
            nb.push(to);
            self.set_links(from, level, nb);
            return;
        }
        let base = Exact {
            vecs,
            q: self.row(vecs, from),
            dim: self.p.dim,
        };
        let mut cands: Vec<Cand> = nb
            .iter()
            .chain(std::iter::once(&to))
            .map(|&x| Cand {
                d: base.dist(x),
                n: x,
            })
            .collect();
        cands.sort_unstable();
        let kept = self.select(vecs, &cands, max_links);
        self.set_links(from, level, &kept);
    }

    fn make_live(&self, n: u32) {
        if self.state[n as usize].swap(LIVE, AcqRel) != LIVE {
            self.live.fetch_add(1, Relaxed);
        }
    }

    /// Inserts node `n` with vector `v`, or moves it to `v`; searchable when this returns.
    pub fn upsert(&self, n: u32, v: &[f32]) -> Result<(), HnswError> {
        self.write_vector(n, v)?;
        self.link(n);
        Ok(())
    }

    /// Builds from many vectors at once: all vectors are copied in first, then nodes are
    /// linked in parallel on rayon's pool.
    /// `matrix` is row-major with row `n` for node `n`; only `nodes` are inserted.
    pub fn insert_many(
        &self,
        nodes: &[u32],
        matrix: &[f32],
        progress: impl Fn(usize) + Sync,
    ) -> Result<(), HnswError> {
        use rayon::prelude::*;
        let d = self.p.dim;
        {
            let mut w = self.vectors.write();
            for &n in nodes {
                if n as usize >= self.cap {
                    return Err(HnswError::Full(n, self.cap));
                }
                let v = matrix.get(n as usize * d..(n as usize + 1) * d).ok_or(
                    HnswError::Dimensions {
                        got: matrix.len() % d.max(1),
                        want: d,
                    },
                )?;
                self.store_row(&mut w, n, v);
            }
        }
        if let Some((&first, rest)) = nodes.split_first() {
            self.link(first);
            rest.par_iter()
                .enumerate()
                .with_min_len(64)
                .for_each(|(i, &n)| {
                    self.link(n);
                    if i % 65_536 == 0 {
                        progress(i);
                    }
                });
        }
        Ok(())
    }

    /// Takes `n` out of results; it keeps routing searches until re-linked or rebuilt.
    pub fn remove(&self, n: u32) -> bool {
        let was = self
            .state
            .get(n as usize)
            .map(|s| s.compare_exchange(LIVE, DELETED, AcqRel, Relaxed).is_ok())
            .unwrap_or(false);
        if was {
            self.live.fetch_sub(1, Relaxed);
            self.deleted.fetch_add(1, Relaxed);
        }
        was
    }

    /// Node `n`'s stored vector.
    pub fn vector(&self, n: u32) -> Option<Vec<f32>> {
        if !self.contains(n) {
            return None;
        }
        let rows = self.vectors.read();
        Some(self.row(&rows.vecs, n).iter().map(|x| x.to_f32()).collect())
    }

    /// The approximate `k` nodes with the largest inner product with `q`, best first, with
    /// their inner products.
    pub fn search(&self, q: &[f32], k: usize) -> Result<Vec<(u32, f32)>, HnswError> {
        if q.len() != self.p.dim {
            return Err(HnswError::Dimensions {
                got: q.len(),
                want: self.p.dim,
            });
        }
        let e = self.entry.load(Acquire);
        if e == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let (ep, max_level) = ((e & 0xffff_ffff) as u32, ((e >> 32) - 1) as usize);
        let rows = self.vectors.read();
        let vecs = &rows.vecs[..];
        let mut s = self.scratch();
        let mut query = std::mem::take(&mut s.query);
        query.clear();
        query.extend(q.iter().map(|&x| E::from_f32(x)));
        let mut qcode = std::mem::take(&mut s.qcode);
        qcode.clear();
        qcode.resize(self.lines, Line::default());
        encode(q, &mut qcode);
        // The walk compares int8 codes (one cache line per 64 dimensions, an integer kernel);
        // the beam it ends with is re-scored with the stored vectors below.
        let nav = Nav {
            codes: &rows.codes,
            scales: &rows.scales,
            q: &qcode,
        };
        let mut nb = Vec::with_capacity(self.m0);
        let start = Cand {
            d: nav.dist(ep),
            n: ep,
        };
        let cur = self.descend(&nav, start, max_level, 0, &mut nb);
        let ef = self.ef_search.load(Relaxed).max(k);
        self.search_layer(&nav, cur, ef, 0, true, &mut s, &mut nb);
        let exact = Exact {
            vecs,
            q: &query,
            dim: self.p.dim,
        };
        let sink = s.top.iter().fold(0, |a, c| a ^ exact.touch(c.n));
        let mut out: Vec<(u32, f32)> = s.top.drain().map(|c| (c.n, -exact.dist(c.n))).collect();
        std::hint::black_box(sink);
        s.query = query;
        s.qcode = qcode;
        self.give_back(s);
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        Ok(out)
    }

    /// Writes the graph and vectors (little-endian; nodes never used are skipped).
    pub fn save(&self, w: &mut impl Write) -> Result<(), HnswError> {
        let u32s = |w: &mut dyn Write, v: &mut dyn Iterator<Item = u32>| -> std::io::Result<()> {
            for x in v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        };
        w.write_all(MAGIC)?;
        w.write_all(&[E::KIND])?;
        let p = self.params();
        for x in [p.dim, p.m, p.ef_construction, p.ef_search, self.cap] {
            w.write_all(&(x as u64).to_le_bytes())?;
        }
        w.write_all(&self.entry.load(Acquire).to_le_bytes())?;
        let used: Vec<u32> = (0..self.cap as u32)
            .filter(|&n| self.state[n as usize].load(Acquire) != EMPTY)
            .collect();
        w.write_all(&(used.len() as u64).to_le_bytes())?;
        let vecs = self.vectors.read();
        let d = self.p.dim;
        for &n in &used {
            let lv = self.levels[n as usize].load(Relaxed);
            w.write_all(&n.to_le_bytes())?;
            w.write_all(&[self.state[n as usize].load(Relaxed), lv])?;
            u32s(w, &mut self.links(n, 0).iter().map(|x| x.load(Relaxed)))?;
            for l in 1..=lv as usize {
                u32s(w, &mut self.links(n, l).iter().map(|x| x.load(Relaxed)))?;
            }
            u32s(
                w,
                &mut vecs.vecs[n as usize * d..(n as usize + 1) * d]
                    .iter()
                    .map(|x| x.to_bits()),
            )?;
        }
        Ok(())
    }

    /// Reads what [`Graph::save`] wrote, into a graph with room for at least
    /// `capacity(stored nodes)` nodes (and at least the saved capacity).
    pub fn load(r: &mut impl Read, capacity: impl Fn(usize) -> usize) -> Result<Self, HnswError> {
        let bad = |m: &str| HnswError::Format(m.to_string());
        let mut magic = [0u8; 9];
        r.read_exact(&mut magic)?;
        if &magic[..8] != MAGIC {
            return Err(bad("not a Cascade HNSW file"));
        }
        if magic[8] != E::KIND {
            return Err(bad("stored with another precision"));
        }
        let mut u64s = |n: usize| -> std::io::Result<Vec<u64>> {
            let mut b = [0u8; 8];
            (0..n)
                .map(|_| r.read_exact(&mut b).map(|()| u64::from_le_bytes(b)))
                .collect()
        };
        let h = u64s(7)?;
        let (dim, m, efc, efs, cap, entry, used) = (
            h[0] as usize,
            h[1] as usize,
            h[2] as usize,
            h[3] as usize,
            h[4] as usize,
            h[5],
            h[6] as usize,
        );
        if dim == 0 || dim > 65_536 || !(2..=256).contains(&m) || used > cap {
            return Err(bad("implausible header"));
        }
        let g = Self::new(
            Params {
                dim,
                m,
                ef_construction: efc,
                ef_search: efs,
            },
            cap.max(capacity(used)),
        );
        let mut word = [0u8; 4];
        let mut read_u32 = |r: &mut dyn Read| -> std::io::Result<u32> {
            r.read_exact(&mut word)?;
            Ok(u32::from_le_bytes(word))
        };
        {
            let mut vecs = g.vectors.write();
            for _ in 0..used {
                let n = read_u32(r)?;
                let mut sl = [0u8; 2];
                r.read_exact(&mut sl)?;
                let (st, lv) = (sl[0], sl[1] as usize);
                if n as usize >= cap || lv > MAX_LEVEL || st > DELETED {
                    return Err(bad("node out of range"));
                }
                for x in g.links(n, 0) {
                    let v = read_u32(r)?;
                    x.store(v, Relaxed);
                }
                if lv > 0 {
                    let words: Vec<AtomicU32> = (0..lv * (1 + m))
                        .map(|_| read_u32(r).map(AtomicU32::new))
                        .collect::<std::io::Result<_>>()?;
                    let _ = g.upper[n as usize].set(words.into_boxed_slice());
                }
                let mut v = Vec::with_capacity(dim);
                for _ in 0..dim {
                    v.push(E::from_bits(read_u32(r)?).to_f32());
                }
                g.store_row(&mut vecs, n, &v);
                g.levels[n as usize].store(lv as u8, Relaxed);
                g.state[n as usize].store(st, Relaxed);
                if st == LIVE {
                    g.live.fetch_add(1, Relaxed);
                } else {
                    g.deleted.fetch_add(1, Relaxed);
                }
            }
        }
        // Every stored link must name a stored node.
        for n in 0..cap {
            if g.state[n].load(Relaxed) == EMPTY {
                continue;
            }
            let lv = g.levels[n].load(Relaxed) as usize;
            for l in 0..=lv {
                let mut nb = Vec::new();
                g.neighbours(n as u32, l, &mut nb);
                if nb
                    .iter()
                    .any(|&x| x as usize >= cap || g.state[x as usize].load(Relaxed) == EMPTY)
                {
                    return Err(bad("a link names a missing node"));
                }
            }
        }
        if entry != 0 && (entry & 0xffff_ffff) as usize >= cap {
            return Err(bad("entry point out of range"));
        }
        g.entry.store(entry, Release);
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        // Norms spread over two orders of magnitude, as trained factors' do.
        (0..n)
            .flat_map(|_| {
                let norm = 10f32.powf(rng.random_range(-1.0..1.0));
                (0..dim)
                    .map(|_| norm * rng.random_range(-1.0f32..1.0))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn codes_approximate_the_inner_product_in_any_dimension() {
        for dim in [8, 64, 100, 128] {
            let v = random(200, dim, dim as u64);
            let lines = dim.div_ceil(64);
            let mut q = vec![Line::default(); lines];
            let mut x = vec![Line::default(); lines];
            for pair in v.chunks_exact(2 * dim) {
                let (a, b) = pair.split_at(dim);
                let (sa, sb) = (encode(a, &mut q), encode(b, &mut x));
                let approx = sa * sb * code_dot(&q, &x) as f32;
                let exact = crate::als::dot(a, b);
                let scale = crate::als::dot(a, a).sqrt() * crate::als::dot(b, b).sqrt();
                assert!(
                    (approx - exact).abs() <= 0.02 * scale,
                    "dim {dim}: {approx} vs {exact} (norms product {scale})"
                );
            }
        }
        let mut z = vec![Line::default(); 1];
        assert_eq!(
            encode(&[0.0; 8], &mut z),
            0.0,
            "a zero vector has a zero code"
        );
        assert!(z[0].0.iter().all(|&c| c == 0));
        assert_eq!(encode(&[f32::NAN; 8], &mut z), 0.0, "so does a broken one");
    }

    #[test]
    fn results_carry_stored_precision_scores_in_order() {
        let (n, dim) = (3000, 100); // two code lines per node
        let v = random(n, dim, 9);
        let g: Graph<F16> = Graph::new(
            Params {
                dim,
                m: 16,
                ef_construction: 100,
                ef_search: 40,
            },
            n,
        );
        let ids: Vec<u32> = (0..n as u32).collect();
        g.insert_many(&ids, &v, |_| {}).expect("build");
        let queries = random(40, dim, 10);
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let got = g.search(q, 10).expect("search");
            assert_eq!(got.len(), 10);
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            let stored: Vec<F16> = q.iter().map(|&x| F16::from_f32(x)).collect();
            for &(n, score) in &got {
                let row = g.vector(n).expect("stored");
                let want: Vec<F16> = row.iter().map(|&x| F16::from_f32(x)).collect();
                assert_eq!(score, F16::dot(&stored, &want), "re-scored, not the code's");
            }
            let want = crate::ann::tests::exact(&v, dim, q, 10);
            hits += got.iter().filter(|(n, _)| want.contains(n)).count();
        }
        let recall = hits as f64 / 400.0;
        assert!(recall >= 0.9, "recall@10 {recall}");
    }
}
