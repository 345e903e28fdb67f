//! Arrow schemas as bytes, in DataFusion's protobuf form: how a schema
//! travels inside our plan nodes ([`crate::codec`]) and inside the tag
//! refresh's task results ([`crate::refresh`]).
//!
//! Its own module because both of those use it and neither should depend
//! on the other for it.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use prost::Message;

/// `schema` as protobuf bytes.
pub(crate) fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let proto = datafusion_proto::protobuf::Schema::try_from(schema)?;
    Ok(proto.encode_to_vec())
}

/// The schema [`schema_bytes`] wrote.
pub(crate) fn schema_from(bytes: &[u8]) -> Result<SchemaRef> {
    let proto =
        datafusion_proto::protobuf::Schema::decode(bytes).map_err(|e| DataFusionError::Internal(e.to_string()))?;
    Ok(Arc::new(Schema::try_from(&proto)?))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn schemas_read_back_and_damaged_bytes_are_errors() {
        let schema = Schema::new(vec![
            Field::new("member_key", DataType::UInt32, false),
            Field::new("recency_days", DataType::Float64, true),
        ]);
        assert_eq!(*schema_from(&schema_bytes(&schema).unwrap()).unwrap(), schema);
        assert!(schema_from(&[0xff, 0xff, 0xff]).is_err());
    }
}
