//! Reading internally tagged enums (`{"type": "result", …}`) without serde's buffering. The derive
//! reads the whole object into an intermediate tree before it knows the variant, since the tag may
//! come anywhere; this crate writes the tag first, so when it comes first the rest of the object
//! goes straight to the variant's fields. With the tag elsewhere (an app in another language may
//! write fields in any order) or for a variant read the usual way, the object is buffered and read
//! by the derived implementation, as before. Workers read every result through here.

use serde::de::{self, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

pub(crate) trait TaggedEnum: Sized {
    const EXPECTING: &'static str;
    /// Whether [`TaggedEnum::read_variant`] reads the variant named `tag`.
    fn reads_directly(tag: &str) -> bool;
    /// The variant named `tag` (one [`TaggedEnum::reads_directly`] accepts), from the rest of
    /// the object after its tag.
    fn read_variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error>;
}

/// The derived deserialization (`#[serde(remote = "Self")]`), given the buffered object.
type Derived<T> = fn(Value) -> Result<T, serde_json::Error>;

/// The rest of an object as `T`'s fields.
pub(crate) fn read_rest<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(
    rest: A,
) -> Result<T, A::Error> {
    T::deserialize(de::value::MapAccessDeserializer::new(rest))
}

pub(crate) fn deserialize<'de, T: TaggedEnum, D: Deserializer<'de>>(
    deserializer: D,
    derived: Derived<T>,
) -> Result<T, D::Error> {
    deserializer.deserialize_map(TagFirst(derived))
}

struct TagFirst<T>(Derived<T>);

impl<'de, T: TaggedEnum> Visitor<'de> for TagFirst<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut object = Map::new();
        if let Some(first) = map.next_key::<String>()? {
            let value: Value = if first == "type" {
                let tag: String = map.next_value()?;
                if T::reads_directly(&tag) {
                    return T::read_variant(&tag, map);
                }
                Value::String(tag)
            } else {
                map.next_value()?
            };
            object.insert(first, value);
        }
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            object.insert(key, value);
        }
        (self.0)(Value::Object(object)).map_err(de::Error::custom)
    }
}

/// `Serialize` by the derived (remote) implementation and `Deserialize` through [`deserialize`].
macro_rules! serde_through_tagged {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::tagged::deserialize(deserializer, |object| <$t>::deserialize(object))
            }
        }
    };
}
pub(crate) use serde_through_tagged;
