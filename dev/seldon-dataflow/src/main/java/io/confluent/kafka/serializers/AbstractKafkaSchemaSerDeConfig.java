package io.confluent.kafka.serializers;

/**
 * Compile stand-in for Confluent's {@code io.confluent.kafka.serializers.AbstractKafkaSchemaSerDeConfig}
 * (confluentinc/schema-registry, schema-serializer module; jar on packages.confluent.io only, which
 * this build cannot reach). Holds only the keys Seldon's {@code SchemaRegistry.kt} reads, with
 * Confluent's values (the real class takes the client ones from {@code SchemaRegistryClientConfig}).
 */
public final class AbstractKafkaSchemaSerDeConfig {
  public static final String SCHEMA_REGISTRY_URL_CONFIG = "schema.registry.url";
  public static final String AUTO_REGISTER_SCHEMAS = "auto.register.schemas";
  public static final String USE_LATEST_VERSION = "use.latest.version";
  public static final String NORMALIZE_SCHEMAS = "normalize.schemas";
  public static final String USER_INFO_CONFIG = "basic.auth.user.info";
  public static final String BEARER_AUTH_TOKEN_CONFIG = "bearer.auth.token";
  public static final String BASIC_AUTH_CREDENTIALS_SOURCE = "basic.auth.credentials.source";

  private AbstractKafkaSchemaSerDeConfig() {}
}
