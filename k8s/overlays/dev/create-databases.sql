-- One database per target (database-per-service), created on the first start of the dev
-- PostgreSQL. Each target applies its own migrations (init container `shlyuz migrate`).
CREATE DATABASE gateway;
CREATE DATABASE registry;
CREATE DATABASE notify;
CREATE DATABASE intake;
CREATE DATABASE housing;
