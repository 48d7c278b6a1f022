package io.confluent.kafka.schemaregistry.client;

import java.util.Collection;

/**
 * Compile stand-in for Confluent's {@code io.confluent.kafka.schemaregistry.client.SchemaRegistryClient}
 * (confluentinc/schema-registry, client module): only the call Seldon's {@code SchemaRegistry.kt}
 * makes to ping the registry. No instance ever exists: the stub serializer refuses to be created.
 */
public interface SchemaRegistryClient {
  Collection<String> getAllSubjects();
}
