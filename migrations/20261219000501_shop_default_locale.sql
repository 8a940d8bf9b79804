-- The shop's default locale, the third step of a nudge's locale chain (customer locale, its language, the shop's
-- default, `en`). On `merchants` rather than `program_settings`, whose row needs a saved RFM configuration; set
-- through the nudge templates `PUT` today, and from Shopify's `primary_locale` once that is fetched.
ALTER TABLE merchants ADD COLUMN IF NOT EXISTS default_locale TEXT;
