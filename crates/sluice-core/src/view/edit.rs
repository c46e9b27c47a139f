//! Editing encoded requests: keep, drop or rewrite resources, scopes, metrics and items, and split
//! a request into one request per key, copying bytes and re-encoding only what changed.
//!
//! Both operations build their output with one [`Assembler`]: a pre-order arena of the output's
//! messages that knows each one's length before writing it, so every length prefix is written
//! once, in its shortest form. A container whose children all survive unchanged is collapsed
//! into one copy of its original bytes. An edit that changes nothing writes nothing: the caller
//! keeps the original buffer. Resources, scopes and metrics that an edit leaves without items
//! are removed, as the Collector's `RemoveIf` loops do; ones that had no items to begin with are
//! left as they were.

use std::collections::HashMap;
use std::hash::Hash;

use bytes::{Bytes, BytesMut};
use prost::Message;

use super::{
    Context, DataPoint, Item, LogRecord, Metric, MetricKind, Resource, Scanned, Scope, Span, each,
};
use crate::Signal;
use crate::wire::{self, MAX_DEPTH, put_len_header, varint_len};

/// What an [`Editor`] decides for one resource, scope, metric or item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it as it is.
    Keep,
    /// Remove it, and everything beneath it.
    Drop,
    /// For an item: its new encoding. For a resource, scope or metric: its new header, meaning
    /// every field except its children (scopes, items, data); build it with [`Verdict::resource`],
    /// [`Verdict::scope`] or [`Verdict::metric`].
    Replace(Vec<u8>),
}

impl Verdict {
    /// Replaces an item (a span, log record or data point) with `message`.
    pub fn replace(message: &impl Message) -> Verdict {
        Verdict::Replace(message.encode_to_vec())
    }

    /// Replaces a resource's `Resource` with `resource`, keeping its `schema_url`.
    pub fn resource(
        view: &Resource<'_>,
        resource: &opentelemetry_proto::tonic::resource::v1::Resource,
    ) -> Verdict {
        Verdict::Replace(header_with(
            view.raw(),
            &[1, 2],
            &[(1, &resource.encode_to_vec())],
        ))
    }

    /// Replaces a scope's `InstrumentationScope` with `scope`, keeping its `schema_url`.
    pub fn scope(
        view: &Scope<'_>,
        scope: &opentelemetry_proto::tonic::common::v1::InstrumentationScope,
    ) -> Verdict {
        Verdict::Replace(header_with(
            view.raw(),
            &[1, 2],
            &[(1, &scope.encode_to_vec())],
        ))
    }

    /// Replaces a span's `trace_state` (empty: removes it), keeping every other field as it was
    /// encoded: no decoding, one copy.
    pub fn span_trace_state(view: &Span<'_>, trace_state: &str) -> Verdict {
        let set: &[(u32, &[u8])] = if trace_state.is_empty() {
            &[]
        } else {
            &[(3, trace_state.as_bytes())]
        };
        Verdict::Replace(header_with(view.raw(), &[3], set))
    }

    /// Sets a metric's name, description or unit (those given), keeping its data and metadata.
    pub fn metric(
        view: &Metric<'_>,
        name: Option<&str>,
        description: Option<&str>,
        unit: Option<&str>,
    ) -> Verdict {
        let set: Vec<(u32, &[u8])> = [(1, name), (2, description), (3, unit)]
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v.as_bytes())))
            .collect();
        let mut skip: Vec<u32> = vec![5, 7, 9, 10, 11];
        skip.extend(set.iter().map(|(n, _)| *n));
        Verdict::Replace(header_with(view.raw(), &skip, &set))
    }
}

/// The fields of `raw` except those numbered in `skip`, then the length-delimited `set` fields.
fn header_with(raw: &[u8], skip: &[u32], set: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in each(raw).filter(|f| !skip.contains(&f.number)) {
        out.extend_from_slice(f.raw);
    }
    for (number, value) in set {
        put_len_header(&mut out, *number, value.len());
        out.extend_from_slice(value);
    }
    out.to_vec()
}

/// How deep an [`Editor`] looks: the walk copies what lies below untouched, in one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Resources only (a resource processor).
    Resources,
    /// Resources and scopes.
    Scopes,
    /// Down to metrics (metrics batches).
    Metrics,
    /// Down to every item (the default).
    Items,
}

/// Decides, level by level, what to keep of a batch. Every method keeps by default.
///
/// A resource, scope or metric dropped takes its items along without its items being visited.
pub trait Editor {
    /// How deep the walk goes; below it nothing is visited and everything is copied as it is.
    fn reach(&self) -> Reach {
        Reach::Items
    }

    /// One resource, before its scopes.
    fn resource(&mut self, _resource: &Resource<'_>) -> Verdict {
        Verdict::Keep
    }

    /// One scope, before its items.
    fn scope(&mut self, _resource: &Resource<'_>, _scope: &Scope<'_>) -> Verdict {
        Verdict::Keep
    }

    /// One metric, before its data points (metrics batches only).
    fn metric(
        &mut self,
        _resource: &Resource<'_>,
        _scope: &Scope<'_>,
        _metric: &Metric<'_>,
    ) -> Verdict {
        Verdict::Keep
    }

    /// One item: a span, log record or data point.
    fn item(&mut self, _context: &Context<'_>, _item: &Item<'_>) -> Verdict {
        Verdict::Keep
    }
}

/// What a nesting level holds, by depth: the request, then these, then items.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Resource,
    Scope,
    Metric,
    /// `Metric.data`'s message (`Gauge`, `Sum`, ...), holding the points.
    Data,
}

fn role(depth: usize) -> Role {
    match depth {
        1 => Role::Resource,
        2 => Role::Scope,
        3 => Role::Metric,
        _ => Role::Data,
    }
}

/// Where the walk is: the messages enclosing the current item.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    resource: &'a [u8],
    scope: &'a [u8],
    metric: Option<&'a [u8]>,
    kind: MetricKind,
}

impl<'a> Cursor<'a> {
    fn new() -> Self {
        Cursor {
            resource: &[],
            scope: &[],
            metric: None,
            kind: MetricKind::Gauge,
        }
    }

    fn context(&self) -> Context<'a> {
        Context {
            resource: Resource(self.resource),
            scope: Scope(self.scope),
            metric: self.metric.map(Metric),
        }
    }

    fn item(&self, signal: Signal, raw: &'a [u8]) -> Item<'a> {
        match signal {
            Signal::Traces => Item::Span(Span(raw)),
            Signal::Logs => Item::Log(LogRecord(raw)),
            Signal::Metrics => Item::Point(DataPoint {
                raw,
                kind: self.kind,
            }),
        }
    }

    /// Enters a container at `depth` (field `number`, message `raw`).
    fn enter(&mut self, depth: usize, number: u32, raw: &'a [u8]) {
        match role(depth) {
            Role::Resource => self.resource = raw,
            Role::Scope => self.scope = raw,
            Role::Metric => self.metric = Some(raw),
            Role::Data => self.kind = MetricKind::from_field(number).unwrap_or(MetricKind::Gauge),
        }
    }
}

enum Body<'a> {
    /// Bytes copied as they are: an item, or a container that survived whole.
    Raw(&'a [u8]),
    /// A rewritten item.
    Owned(Vec<u8>),
    /// A container written field by field: its header, then its children in order.
    Container {
        raw: &'a [u8],
        children: &'static [u32],
        header: Option<Vec<u8>>,
    },
}

struct Node<'a> {
    number: u32,
    body: Body<'a>,
    /// One past the last node of its subtree.
    end: usize,
    /// Encoded length of its message, once closed.
    len: usize,
}

/// The output of an edit, or of one group: a pre-order arena of messages.
struct Assembler<'a> {
    nodes: Vec<Node<'a>>,
}

fn framed(number: u32, len: usize) -> usize {
    varint_len(u64::from(number) << 3) + varint_len(len as u64) + len
}

fn is_child(children: &[u32], f: &Scanned<'_>) -> bool {
    f.wire_type == 2 && children.contains(&f.number)
}

impl<'a> Assembler<'a> {
    fn new(request: &'a [u8], children: &'static [u32]) -> Self {
        let mut assembler = Assembler { nodes: Vec::new() };
        assembler.open(0, request, children, None);
        assembler
    }

    fn open(
        &mut self,
        number: u32,
        raw: &'a [u8],
        children: &'static [u32],
        header: Option<Vec<u8>>,
    ) -> usize {
        self.nodes.push(Node {
            number,
            body: Body::Container {
                raw,
                children,
                header,
            },
            end: 0,
            len: 0,
        });
        self.nodes.len() - 1
    }

    fn leaf(&mut self, number: u32, body: Body<'a>) {
        let len = match &body {
            Body::Raw(raw) => raw.len(),
            Body::Owned(bytes) => bytes.len(),
            Body::Container { .. } => unreachable!("leaves are items"),
        };
        let end = self.nodes.len() + 1;
        self.nodes.push(Node {
            number,
            body,
            end,
            len,
        });
    }

    /// Ends container `i`, whose children are the nodes after it, and sizes it.
    fn close(&mut self, i: usize) {
        let end = self.nodes.len();
        let Body::Container {
            raw,
            children,
            header,
        } = &self.nodes[i].body
        else {
            return;
        };
        let mut len = match header {
            Some(header) => header.len(),
            None => each(raw)
                .filter(|f| !is_child(children, f))
                .map(|f| f.raw.len())
                .sum(),
        };
        let mut j = i + 1;
        while j < end {
            len += framed(self.nodes[j].number, self.nodes[j].len);
            j = self.nodes[j].end;
        }
        let node = &mut self.nodes[i];
        node.len = len;
        node.end = end;
    }

    /// Ends container `i`, whose header was replaced, keeping every child of the original as it
    /// is (they were not visited).
    fn close_untouched(&mut self, i: usize) {
        let Body::Container { raw, children, .. } = &self.nodes[i].body else {
            return;
        };
        let (raw, children) = (*raw, *children);
        for f in each(raw).filter(|f| is_child(children, f)) {
            self.leaf(f.number, Body::Raw(f.value));
        }
        self.close(i);
    }

    /// Ends container `i` as its original bytes: nothing in it changed.
    fn collapse(&mut self, i: usize) {
        self.nodes.truncate(i + 1);
        let node = &mut self.nodes[i];
        if let Body::Container { raw, .. } = node.body {
            node.len = raw.len();
            node.body = Body::Raw(raw);
        }
        node.end = i + 1;
    }

    /// Removes container `i` and everything in it.
    fn discard(&mut self, i: usize) {
        self.nodes.truncate(i);
    }

    /// Writes the request (node 0, closed).
    fn finish(mut self) -> Bytes {
        self.close(0);
        let mut out = BytesMut::with_capacity(self.nodes[0].len);
        self.write(0, &mut out);
        out.freeze()
    }

    fn write(&self, i: usize, out: &mut BytesMut) {
        let node = &self.nodes[i];
        if i > 0 {
            put_len_header(out, node.number, node.len);
        }
        match &node.body {
            Body::Raw(raw) => out.extend_from_slice(raw),
            Body::Owned(bytes) => out.extend_from_slice(bytes),
            Body::Container {
                raw,
                children,
                header,
            } => {
                match header {
                    Some(header) => out.extend_from_slice(header),
                    None => {
                        for f in each(raw).filter(|f| !is_child(children, f)) {
                            out.extend_from_slice(f.raw);
                        }
                    }
                }
                let mut j = i + 1;
                while j < node.end {
                    self.write(j, out);
                    j = self.nodes[j].end;
                }
            }
        }
    }
}

/// What an edit did to one message: items dropped, whether it held items before and still
/// holds some (a container left without items goes), whether anything changed.
#[derive(Default)]
struct Tally {
    dropped: usize,
    had: bool,
    kept: bool,
    changed: bool,
}

struct EditWalk<'a, 'e, E: Editor + ?Sized> {
    signal: Signal,
    levels: &'static [&'static [u32]],
    editor: &'e mut E,
    out: Assembler<'a>,
}

impl<'a, E: Editor + ?Sized> EditWalk<'a, '_, E> {
    /// Whether the editor looks at the level `depth` (1 resources, 2 scopes, 3 metrics, the
    /// last the items).
    fn reaches(&self, depth: usize) -> bool {
        let wanted = match self.editor.reach() {
            Reach::Resources => 1,
            Reach::Scopes => 2,
            Reach::Metrics => 3,
            Reach::Items => usize::MAX,
        };
        depth <= wanted
    }

    fn level(&mut self, depth: usize, msg: &'a [u8], cursor: &mut Cursor<'a>) -> Tally {
        let children = self.levels[depth];
        let leaf = depth + 1 == self.levels.len();
        let mut tally = Tally::default();
        for f in each(msg).filter(|f| is_child(children, f)) {
            if leaf {
                tally.had = true;
                let item = cursor.item(self.signal, f.value);
                match self.editor.item(&cursor.context(), &item) {
                    Verdict::Keep => {
                        self.out.leaf(f.number, Body::Raw(f.value));
                        tally.kept = true;
                    }
                    Verdict::Drop => {
                        tally.dropped += 1;
                        tally.changed = true;
                    }
                    Verdict::Replace(bytes) => {
                        self.out.leaf(f.number, Body::Owned(bytes));
                        tally.kept = true;
                        tally.changed = true;
                    }
                }
                continue;
            }
            let depth = depth + 1;
            cursor.enter(depth, f.number, f.value);
            let verdict = match role(depth) {
                Role::Resource => self.editor.resource(&Resource(f.value)),
                Role::Scope => self
                    .editor
                    .scope(&Resource(cursor.resource), &Scope(f.value)),
                Role::Metric => self.editor.metric(
                    &Resource(cursor.resource),
                    &Scope(cursor.scope),
                    &Metric(f.value),
                ),
                Role::Data => Verdict::Keep,
            };
            let header = match verdict {
                Verdict::Keep => None,
                Verdict::Replace(header) => Some(header),
                Verdict::Drop => {
                    let items = wire::count_levels(&self.levels[depth..], f.value);
                    tally.dropped += items;
                    tally.had |= items > 0;
                    tally.changed = true;
                    continue;
                }
            };
            let replaced = header.is_some();
            let node = self.out.open(f.number, f.value, self.levels[depth], header);
            if !self.reaches(depth + 1) {
                // Nothing below is looked at (or counted): the children go as they are.
                tally.had = true;
                tally.kept = true;
                if replaced {
                    self.out.close_untouched(node);
                    tally.changed = true;
                } else {
                    self.out.collapse(node);
                }
                continue;
            }
            let inner = self.level(depth, f.value, cursor);
            tally.dropped += inner.dropped;
            tally.had |= inner.had;
            if inner.had && !inner.kept {
                self.out.discard(node);
                tally.changed = true;
                continue;
            }
            tally.kept |= inner.kept;
            if inner.changed || replaced {
                self.out.close(node);
                tally.changed = true;
            } else {
                self.out.collapse(node);
            }
        }
        tally
    }
}

/// Runs `editor` over an encoded request of `signal`: `None` when it changed nothing, else the
/// new request and how many items it dropped.
pub(crate) fn edit<E: Editor + ?Sized>(
    signal: Signal,
    request: &[u8],
    editor: &mut E,
) -> Option<(Bytes, usize)> {
    let levels = wire::shape(signal).levels;
    let mut walk = EditWalk {
        signal,
        levels,
        editor,
        out: Assembler::new(request, levels[0]),
    };
    let tally = walk.level(0, request, &mut Cursor::new());
    tally.changed.then(|| (walk.out.finish(), tally.dropped))
}

/// An [`Editor`] that keeps the items a predicate accepts.
pub(crate) struct Retain<F>(pub(crate) F);

impl<F: FnMut(&Context<'_>, &Item<'_>) -> bool> Editor for Retain<F> {
    fn item(&mut self, context: &Context<'_>, item: &Item<'_>) -> Verdict {
        if (self.0)(context, item) {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

/// One group's output, and which of the current containers it has opened.
struct Group<'a, K> {
    key: K,
    out: Assembler<'a>,
    items: usize,
    /// Per depth: the node opened for the current container, and the items added under it.
    open: [Option<(usize, usize)>; MAX_DEPTH],
}

struct GroupWalk<'a, K, F> {
    signal: Signal,
    levels: &'static [&'static [u32]],
    request: &'a [u8],
    key: F,
    groups: Vec<Group<'a, K>>,
    index: HashMap<K, usize>,
    /// Per depth: the current container (field number and message).
    path: [(u32, &'a [u8]); MAX_DEPTH],
    /// Per depth: the groups that opened the current container.
    touched: [Vec<usize>; MAX_DEPTH],
}

impl<'a, K, F> GroupWalk<'a, K, F>
where
    K: Hash + Eq + Clone,
    F: FnMut(&Context<'_>, &Item<'_>) -> K,
{
    /// Walks the children of `msg` at `depth`; returns how many items it holds.
    fn level(&mut self, depth: usize, msg: &'a [u8], cursor: &mut Cursor<'a>) -> usize {
        let children = self.levels[depth];
        let leaf = depth + 1 == self.levels.len();
        let mut items = 0;
        for f in each(msg).filter(|f| is_child(children, f)) {
            if leaf {
                items += 1;
                let key = (self.key)(&cursor.context(), &cursor.item(self.signal, f.value));
                let g = self.group(key);
                self.add(g, depth, f.number, f.value);
                continue;
            }
            let depth = depth + 1;
            cursor.enter(depth, f.number, f.value);
            self.path[depth] = (f.number, f.value);
            let inner = self.level(depth, f.value, cursor);
            items += inner;
            for g in std::mem::take(&mut self.touched[depth]) {
                let group = &mut self.groups[g];
                if let Some((node, added)) = group.open[depth].take() {
                    if added == inner {
                        group.out.collapse(node);
                    } else {
                        group.out.close(node);
                    }
                }
            }
        }
        items
    }

    fn group(&mut self, key: K) -> usize {
        if let Some(&g) = self.index.get(&key) {
            return g;
        }
        self.groups.push(Group {
            key: key.clone(),
            out: Assembler::new(self.request, self.levels[0]),
            items: 0,
            open: [None; MAX_DEPTH],
        });
        self.index.insert(key, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// Adds an item (in a container at `depth`) to group `g`, opening its containers there.
    fn add(&mut self, g: usize, depth: usize, number: u32, raw: &'a [u8]) {
        let group = &mut self.groups[g];
        for d in 1..=depth {
            match &mut group.open[d] {
                Some((_, added)) => *added += 1,
                open @ None => {
                    let (n, msg) = self.path[d];
                    *open = Some((group.out.open(n, msg, self.levels[d], None), 1));
                    self.touched[d].push(g);
                }
            }
        }
        group.out.leaf(number, Body::Raw(raw));
        group.items += 1;
    }
}

/// Splits an encoded request into one per key, in order of first appearance, with each item's
/// resource, scope and metric copied into every request that holds some of its items. For a
/// group holding every item, the request is `None`: the original serves. Containers holding no
/// items are left out, except inside a container whose items all went to one group: that one is
/// copied whole, as it was.
pub(crate) fn group_by<K, F>(
    signal: Signal,
    request: &[u8],
    key: F,
) -> Vec<(K, Option<Bytes>, usize)>
where
    K: Hash + Eq + Clone,
    F: FnMut(&Context<'_>, &Item<'_>) -> K,
{
    let levels = wire::shape(signal).levels;
    let mut walk = GroupWalk {
        signal,
        levels,
        request,
        key,
        groups: Vec::new(),
        index: HashMap::new(),
        path: [(0, &[][..]); MAX_DEPTH],
        touched: Default::default(),
    };
    let total = walk.level(0, request, &mut Cursor::new());
    let whole = walk.groups.len() == 1 && walk.groups[0].items == total;
    walk.groups
        .into_iter()
        .map(|g| {
            let data = (!whole).then(|| g.out.finish());
            (g.key, data, g.items)
        })
        .collect()
}
