package io.confluent.kafka.serializers.protobuf;

import com.google.protobuf.Message;
import io.confluent.kafka.schemaregistry.client.SchemaRegistryClient;
import java.util.Map;
import org.apache.kafka.common.serialization.Serializer;

/**
 * Compile stand-in for Confluent's
 * {@code io.confluent.kafka.serializers.protobuf.KafkaProtobufSerializer} (confluentinc/schema-registry,
 * protobuf-serializer module; shipped in io.confluent:kafka-streams-protobuf-serde, on
 * packages.confluent.io only). Seldon's {@code SchemaRegistry.kt} creates one only when a schema
 * registry is configured ({@code kafka.schema.registry.config.path}, empty by default). Then this
 * build has no real serializer, so it fails at startup rather than write a wrong wire format.
 */
public class KafkaProtobufSerializer<T extends Message> implements Serializer<T> {
  public KafkaProtobufSerializer() {
    throw new UnsupportedOperationException(
        "this dataflow engine was built by income-bundle's dev/seldon-dataflow/pom.xml without "
            + "Confluent's kafka-streams-protobuf-serde (Confluent's repository only): a schema "
            + "registry cannot be used; leave kafka.schema.registry.config.path empty");
  }

  @Override
  public void configure(Map<String, ?> configs, boolean isKey) {
    throw new UnsupportedOperationException("stub: see the constructor");
  }

  @Override
  public byte[] serialize(String topic, T record) {
    throw new UnsupportedOperationException("stub: see the constructor");
  }

  public SchemaRegistryClient getSchemaRegistryClient() {
    throw new UnsupportedOperationException("stub: see the constructor");
  }
}
