//! The request body's JSON shape as serde reads it: strings borrowed from the body wherever
//! JSON needs no unescaping, tags kept as a list. These types are also what the codec encodes.

use std::borrow::Cow;

use metricstream_backend::codec::EncodeMetric;
use serde::Deserialize;

/// The request body as clients send it. Unknown fields are ignored so clients may add their own.
/// Strings borrow from the body wherever JSON needs no unescaping: parsing allocates per request,
/// not per metric or tag.
#[derive(Deserialize)]
#[serde(expecting = "an object with a `metrics` array")]
pub(super) struct IngestRequest<'a> {
    #[serde(borrow)]
    pub(super) metrics: Vec<WireMetric<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a metric object with `name` and `value`")]
pub(crate) struct WireMetric<'a> {
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    pub(super) value: f64,
    /// Unix milliseconds; `null` is the same as absent.
    #[serde(default)]
    pub(super) timestamp: Option<i64>,
    /// `null` is the same as absent.
    #[serde(default, borrow)]
    pub(super) tags: Option<WireTags<'a>>,
}

/// A metric's tags in the order sent. (An inline small vector measured no faster: the moves of
/// its larger metric struct cost what the allocation saves.)
pub(super) type TagList<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The `tags` object, kept as a list rather than a map: sorting a handful of pairs once is
/// cheaper than a tree of owned strings.
#[derive(Debug)]
pub(super) struct WireTags<'a>(pub(super) TagList<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireTags<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for TagsVisitor<'a> {
            type Value = WireTags<'a>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of string tags")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut tags = TagList::new();
                while let Some((key, value)) = map.next_entry::<WireStr<'a>, WireStr<'a>>()? {
                    tags.push((key.0, value.0));
                }
                Ok(WireTags(tags))
            }
        }
        deserializer.deserialize_map(TagsVisitor(std::marker::PhantomData))
    }
}

/// A JSON string borrowed from the body, or owned when it had escapes to undo. (serde's own
/// `Cow` impl always copies; `#[serde(borrow)]` only reaches struct fields, not map entries.)
struct WireStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for WireStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for StrVisitor<'a> {
            type Value = WireStr<'a>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Borrowed(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

impl EncodeMetric for WireMetric<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self) -> f64 {
        self.value
    }

    fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        let tags: &[_] = self.tags.as_ref().map_or(&[], |tags| &tags.0);
        tags.iter().map(|(key, value)| (&**key, &**value))
    }
}
