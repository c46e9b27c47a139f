//! Detection: whether redaction would change what it is shown, read on the encoded batch
//! without decoding (most data holds nothing to redact and is passed on as it came). What does
//! change is decoded and redacted by [`Rules`](super::Rules).

use sluice_core::view::{self, Str};

use super::patterns::Shape;
use super::{DB_SYSTEM, KeyAction, Rules, Sanitizers, scalar_text};

/// Strings found clean (no pattern matches them) earlier in the batch being checked, so that a
/// value that repeats (the same host, route or user agent in every span) is compared, not shaped
/// again: a direct-mapped table of copies, indexed by the length and three bytes.
pub(super) struct Clean {
    slots: Vec<Vec<u8>>,
}

impl Clean {
    const SLOTS: usize = 64;

    pub(super) fn new() -> Clean {
        Clean {
            slots: vec![Vec::new(); Clean::SLOTS],
        }
    }

    pub(super) fn slot(text: &[u8]) -> usize {
        let (first, last) = (text.first(), text.last());
        let middle = text.get(text.len() / 2);
        let hash = text.len()
            ^ usize::from(*first.unwrap_or(&0)) << 2
            ^ usize::from(*middle.unwrap_or(&0)) << 5
            ^ usize::from(*last.unwrap_or(&0)) << 8;
        (hash ^ hash >> 6) % Clean::SLOTS
    }

    pub(super) fn holds(&self, text: &[u8]) -> bool {
        !text.is_empty() && self.slots[Clean::slot(text)] == text
    }

    pub(super) fn remember(&mut self, text: &[u8]) {
        let slot = &mut self.slots[Clean::slot(text)];
        slot.clear();
        slot.extend_from_slice(text);
    }
}

/// Whether redaction would change what it is shown, read on the encoded batch: most data holds
/// nothing to redact and is passed on as it came.
pub(super) struct Detect<'r> {
    rules: &'r Rules,
    clean: Clean,
    /// Attributes (as encoded) found unchanged; apart from `clean`, which holds texts: an
    /// attribute's bytes put a text between tags and lengths, where a pattern's `\b` may fall
    /// otherwise.
    clean_attributes: Clean,
}

impl<'r> Detect<'r> {
    pub(super) fn new(rules: &'r Rules) -> Detect<'r> {
        Detect {
            rules,
            clean: Clean::new(),
            clean_attributes: Clean::new(),
        }
    }

    /// Whether redaction would change an attribute list.
    pub(super) fn attributes_change<'a>(
        &mut self,
        mut attributes: impl Iterator<Item = view::KeyValue<'a>>,
    ) -> bool {
        attributes.any(|kv| self.attribute_changes(&kv))
    }

    /// Whether redaction would change (or, with a summary, note) one attribute.
    fn attribute_changes(&mut self, kv: &view::KeyValue<'_>) -> bool {
        // Whether an attribute changes depends on its bytes alone: one seen unchanged in this
        // batch is compared, not read again.
        let raw = kv.raw();
        if self.clean_attributes.holds(raw) {
            return false;
        }
        let changes = self.attribute_changes_uncached(kv);
        if !changes {
            self.clean_attributes.remember(raw);
        }
        changes
    }

    fn attribute_changes_uncached(&mut self, kv: &view::KeyValue<'_>) -> bool {
        let (key, value) = kv.parts();
        // The key is read as text only when some rule goes by keys.
        let action = if self.rules.keys_matter {
            self.rules.key_action(key.as_str())
        } else {
            KeyAction::Check
        };
        match action {
            KeyAction::Ignore => self.rules.summary_on(),
            KeyAction::Redact => true,
            KeyAction::Mask => {
                let allowed = matches!(value, view::AnyValue::String(s) if self.rules.is_allowed_value(s.as_str()));
                !allowed || self.rules.summary_on()
            }
            KeyAction::Check => self.value_changes(key, &value),
        }
    }

    /// Whether redaction would change the value of attribute `key`.
    fn value_changes(&mut self, key: Str<'_>, value: &view::AnyValue<'_>) -> bool {
        match value {
            view::AnyValue::String(s) => {
                if self.rules.allowed_values.is_some() && self.rules.is_allowed_value(s.as_str()) {
                    return self.rules.summary_on();
                }
                self.string_changes(Some(key), *s, Sanitizers::NONE)
            }
            view::AnyValue::Kvlist(_) => self.attributes_change(value.entries()),
            view::AnyValue::Array(_) => value.array().any(|v| self.value_changes(key, &v)),
            other if self.rules.redact_all_types => scalar_text(other).is_some_and(|text| {
                !self.rules.is_allowed_value(&text) && self.rules.mask_blocked(&text).is_some()
            }),
            _ => false,
        }
    }

    /// Whether a text without a key (a name, a message) would change.
    fn text_changes(&mut self, s: Str<'_>, sanitizers: Sanitizers<'_>) -> bool {
        if self.rules.allowed_values.is_some() && self.rules.is_allowed_value(s.as_str()) {
            return false;
        }
        self.string_changes(None, s, sanitizers)
    }

    /// Whether the sanitizers or the blocked patterns would change a string. Without
    /// sanitizers, the string's bytes are shaped first: most are candidates for no pattern and
    /// are never checked for UTF-8 or copied.
    fn string_changes(
        &mut self,
        key: Option<Str<'_>>,
        s: Str<'_>,
        sanitizers: Sanitizers<'_>,
    ) -> bool {
        let keyed_sanitizers = key.is_some() && self.rules.sanitizes_by_key;
        if sanitizers.url || !sanitizers.db.is_empty() || keyed_sanitizers {
            return self
                .rules
                .redact_text(key.map(|k| k.as_str()), s.as_str(), sanitizers)
                .is_some();
        }
        let text = s.as_bytes();
        if self.rules.blocked.is_empty() || text.len() < self.rules.min_len.max(1) {
            return false;
        }
        if self.clean.holds(text) {
            return false;
        }
        let changes = self.may_mask(text) && self.rules.mask_blocked(s.as_str()).is_some();
        if !changes {
            self.clean.remember(text);
        }
        changes
    }

    /// Whether any blocked pattern may match `text` (a superset of those that do).
    fn may_mask(&mut self, text: &[u8]) -> bool {
        if self.rules.blocked.is_empty() || text.len() < self.rules.min_len.max(1) {
            return false;
        }
        // The user's patterns are asked by `mask_blocked`, on the text.
        if self.rules.user_blocked.is_some() {
            return true;
        }
        let shape = Shape::of(text);
        self.rules.hints.iter().any(|h| h.admits(&shape))
    }

    /// Whether redaction would change a span: one pass over its fields.
    pub(super) fn span_changes(&mut self, span: &view::Span<'_>) -> bool {
        let (mut name, mut kind, mut db) = (Str::default(), 0, false);
        for part in span.parts() {
            let changes = match part {
                view::SpanPart::Name(n) => {
                    name = n;
                    false
                }
                view::SpanPart::Kind(k) => {
                    kind = k;
                    false
                }
                view::SpanPart::Attribute(kv) => {
                    db |= !self.rules.db_span_names.is_empty()
                        && DB_SYSTEM.iter().any(|k| kv.has_key(k));
                    self.attribute_changes(&kv)
                }
                view::SpanPart::Event(e) => {
                    self.attributes_change(e.attributes())
                        || self.text_changes(e.name().into(), Sanitizers::NONE)
                }
                view::SpanPart::Link(l) => self.attributes_change(l.attributes()),
                view::SpanPart::StatusMessage(m) => self.text_changes(m, Sanitizers::NONE),
                view::SpanPart::Other => false,
            };
            if changes {
                return true;
            }
        }
        let sanitizers = self.rules.span_name_sanitizers(kind, name.as_bytes(), db);
        self.text_changes(name, sanitizers)
    }

    pub(super) fn log_changes(&mut self, log: &view::LogRecord<'_>) -> bool {
        if self.attributes_change(log.attributes()) {
            return true;
        }
        match log.body() {
            view::AnyValue::String(s) => {
                if self.rules.allowed_values.is_some() && self.rules.is_allowed_value(s.as_str()) {
                    return self.rules.summary_on();
                }
                self.string_changes(None, s, self.rules.log_body_sanitizers())
            }
            body @ view::AnyValue::Kvlist(_) => self.attributes_change(body.entries()),
            body @ view::AnyValue::Array(_) => body.array().any(|v| self.body_value_changes(&v)),
            other => self.body_value_changes(&other),
        }
    }

    /// A value inside a log body, which has no attribute key of its own.
    fn body_value_changes(&mut self, value: &view::AnyValue<'_>) -> bool {
        match value {
            view::AnyValue::String(s) => {
                if self.rules.allowed_values.is_some() && self.rules.is_allowed_value(s.as_str()) {
                    return self.rules.summary_on();
                }
                self.string_changes(None, *s, Sanitizers::NONE)
            }
            view::AnyValue::Kvlist(_) => self.attributes_change(value.entries()),
            view::AnyValue::Array(_) => value.array().any(|v| self.body_value_changes(&v)),
            other if self.rules.redact_all_types => scalar_text(other).is_some_and(|t| {
                !self.rules.is_allowed_value(&t) && self.rules.mask_blocked(&t).is_some()
            }),
            _ => false,
        }
    }

    pub(super) fn point_changes(&mut self, point: &view::DataPoint<'_>) -> bool {
        self.attributes_change(point.attributes())
            || point
                .exemplars()
                .any(|e| self.attributes_change(e.attributes()))
    }
}
