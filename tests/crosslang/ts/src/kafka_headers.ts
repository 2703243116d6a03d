/** The Kafka record headers of spec section 14.1. */
import type { Envelope } from "./gen/flwire/v1/messages_pb.js";

export function recordHeaders(env: Envelope, type: string, part?: { index: number; count: number }): Record<string, string> {
  const h: Record<string, string> = {
    "flwire-type": type,
    "flwire-schema-version": `${env.schemaVersion!.major}.${env.schemaVersion!.minor}`,
    "flwire-sender-id": env.senderId,
    "flwire-message-id": env.messageId,
  };
  if (part) h["flwire-part"] = `${part.index}/${part.count}`;
  return h;
}
