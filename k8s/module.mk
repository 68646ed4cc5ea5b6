# k8s/: Kustomize manifests, checked offline.
#   make k8s-check    render every overlay (kubectl kustomize), validate each
#                     document against the schema bundle, run the policy rules
#                     and the mutation tests (k8s/tests/k8s_check.sh)
#   make k8s-render   only render, into $(BUILD)/k8s/<overlay>.yaml
# The same script runs in `make test`.

K8S_OVERLAYS := $(notdir $(patsubst %/,%,$(wildcard k8s/overlays/*/)))

TEST_SCRIPTS += k8s/tests/k8s_check.sh

.PHONY: k8s-check k8s-render
k8s-check:
	$(Q)mkdir -p $(BUILD) && KVF_ROOT=$(CURDIR) KVF_BUILD=$(abspath $(BUILD)) bash k8s/tests/k8s_check.sh \
	  | tee $(BUILD)/k8s-check.log; rc=$${PIPESTATUS[0]}; \
	  echo "k8s-check: $$(grep -c '^PASS: ' $(BUILD)/k8s-check.log) passed, $$(grep -c '^FAIL: ' $(BUILD)/k8s-check.log) failed, $$(grep -c '^SKIP: ' $(BUILD)/k8s-check.log) skipped"; \
	  exit $$rc

k8s-render:
	$(Q)mkdir -p $(BUILD)/k8s && for o in $(K8S_OVERLAYS); do \
	  kubectl kustomize k8s/overlays/$$o > $(BUILD)/k8s/$$o.yaml 2>/dev/null \
	    && echo "  RENDER  $(BUILD)/k8s/$$o.yaml" || { echo "k8s-render: $$o failed" >&2; exit 1; }; done
