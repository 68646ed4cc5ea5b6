# tools/kvfctl: admin-socket client.
$(eval $(call kvf_program,kvfctl,tools/kvfctl/kvfctl.c,common))
