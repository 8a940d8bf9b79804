// The webhook door the project's seeds planned, written only as a yardstick for our ingress:
// express with the raw body, @shopify/shopify-api's webhook validation (HMAC of the raw body and
// the required headers), and a kafkajs producer with acks=-1; the 200 is sent after the broker
// acknowledged the record. It does less than our ingress (no dedupe, no normalisation, no PII
// sealing: the raw body is the record), so a comparison flatters it, not us.
//
// Environment: PORT (default 8081), KAFKA_BROKERS (default 127.0.0.1:9092),
// SHOPIFY_API_SECRET (default dev-secret), TOPIC (default orders.create).

import '@shopify/shopify-api/adapters/node';
import { shopifyApi, ApiVersion } from '@shopify/shopify-api';
import express from 'express';
import { Kafka, logLevel } from 'kafkajs';

const port = Number(process.env.PORT || 8081);
const brokers = (process.env.KAFKA_BROKERS || '127.0.0.1:9092').split(',');
const topic = process.env.TOPIC || 'orders.create';

const shopify = shopifyApi({
  apiKey: 'loadtest',
  apiSecretKey: process.env.SHOPIFY_API_SECRET || 'dev-secret',
  scopes: [],
  hostName: '127.0.0.1',
  apiVersion: ApiVersion.October25,
  isEmbeddedApp: false,
  logger: { level: 0 },
});

const kafka = new Kafka({ clientId: 'node-ingress', brokers, logLevel: logLevel.WARN });
const producer = kafka.producer({ allowAutoTopicCreation: false });

const app = express();
app.post('/webhooks/shopify', express.raw({ type: '*/*', limit: '1mb' }), async (req, res) => {
  const rawBody = req.body.toString('utf8');
  const check = await shopify.webhooks.validate({ rawBody, rawRequest: req, rawResponse: res });
  if (!check.valid) {
    res.status(401).json({ error: check.reason });
    return;
  }
  try {
    await producer.send({
      topic,
      acks: -1,
      messages: [{
        key: check.domain,
        value: req.body,
        headers: { webhook_id: check.webhookId, shopify_topic: check.topic },
      }],
    });
    res.status(200).json({ status: 'accepted', event_id: check.webhookId });
  } catch (err) {
    res.status(503).json({ error: 'kafka_unavailable', message: String(err) });
  }
});
app.get('/health', (_req, res) => res.json({ status: 'ok' }));

await producer.connect();
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`node-ingress listening on 127.0.0.1:${port}, producing to ${topic}`);
});
const stop = async () => {
  server.close();
  await producer.disconnect();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
